"""Rule analysed_sessions: the participants table without the sessions of qc.exclude."""
from gamer_mril.qc import run_analysed_sessions

run_analysed_sessions(snakemake.input.table, snakemake.output.tsv,
                      exclude=snakemake.params.exclude, log_file=snakemake.log[0],
                      threads=snakemake.threads)
