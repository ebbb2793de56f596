"""Rule dataset_description: the output dataset's dataset_description.json."""
from gamer_mril.provenance import run_dataset_description

run_dataset_description(snakemake.output[0], snakemake.params.config,
                        log_file=snakemake.log[0], threads=snakemake.threads)
