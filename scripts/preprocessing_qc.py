"""Rule preprocessing_qc: one row of quality-control figures per session."""
from gamer_mril.provenance import run_preprocessing_qc

run_preprocessing_qc(list(snakemake.input), snakemake.output.tsv,
                     log_file=snakemake.log[0], threads=snakemake.threads)
