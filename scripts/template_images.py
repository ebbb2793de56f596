"""Rule template_images: the MNI152 T1w image and brain mask at one resolution, made once."""
from gamer_mril.preprocessing_jobs import run_template_images

run_template_images(snakemake.params.resolution, snakemake.output.t1w, snakemake.output.mask,
                    log_file=snakemake.log[0], threads=snakemake.threads)
