"""Rule dataset_description: dataset_description.json and the resolved configuration."""
from gamer_mril.provenance import run_dataset_description

run_dataset_description(snakemake.output.json, snakemake.params.config,
                        config_out=snakemake.output.config, log_file=snakemake.log[0],
                        threads=snakemake.threads)
