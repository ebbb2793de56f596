"""The output dataset's dataset_description.json (BIDS derivative, GeneratedBy)."""
from gamer_mril.jobs import job
from gamer_mril.provenance import write_dataset_description

with job(snakemake) as j:
    write_dataset_description(snakemake.output[0], snakemake.params.config)
