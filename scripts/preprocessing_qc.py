"""Rule preprocessing_qc: one row of quality-control figures per session."""
from gamer_mril.provenance import run_preprocessing_qc

i = snakemake.input
run_preprocessing_qc([*i.brain_mask, *i.scaled, *i.cerebellum, *i.template_mask],
                     snakemake.output.tsv,
                     log_file=snakemake.log[0], threads=snakemake.threads)
