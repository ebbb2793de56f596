"""Rule session_index: every session of the QC table linked to its page."""
from gamer_mril.session_page import run_session_index

i = snakemake.input
run_session_index(i.qc_table, list(i.pages), snakemake.output.html,
                  excluded_table=i.excluded_table, log_file=snakemake.log[0],
                  threads=snakemake.threads)
