"""Rule analysed_sessions: the participants table without the sessions of qc.exclude and
those with a QC flag of a kind in qc.exclude_flagged."""
from gamer_mril.exclusion import run_analysed_sessions

i, p = snakemake.input, snakemake.params
run_analysed_sessions(i.table, snakemake.output.tsv, snakemake.output.excluded,
                      exclude=p.exclude, exclude_flagged=p.exclude_flagged,
                      qc_table=i.qc or None, log_file=snakemake.log[0],
                      threads=snakemake.threads)
