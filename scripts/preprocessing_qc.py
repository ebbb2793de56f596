"""One row of quality-control figures per session, read from the step sidecars."""
from gamer_mril.jobs import job
from gamer_mril.provenance import qc_table

with job(snakemake) as j:
    qc_table(list(snakemake.input), snakemake.output.tsv)
