"""One row of quality-control figures per session, read from the step sidecars."""
from pathlib import Path

from gamer_mril.jobs import job
from gamer_mril.provenance import qc_table

with job(snakemake) as j:
    qc_table([f for d in snakemake.input for f in sorted(Path(d).glob("*.json"))],
             snakemake.output.tsv)
