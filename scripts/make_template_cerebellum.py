"""Rule make_template_cerebellum: the MNI152 cerebellum mask, made once."""
from gamer_mril.preprocessing_jobs import run_make_template_cerebellum

run_make_template_cerebellum(snakemake.output.mask,
                             cerebellum_margin_mm=snakemake.params.cerebellum_margin_mm,
                             log_file=snakemake.log[0], threads=snakemake.threads)
