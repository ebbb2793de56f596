"""Step 3 (METHOD.md 2.3): rigid (or affine) co-registration of qT1 or MWF to NDI."""
from gamer_mril.jobs import job
from gamer_mril.preprocessing import step_coregister

with job(snakemake, seed=snakemake.params.seed) as j:
    facts = step_coregister(snakemake.input.fixed, snakemake.input.moving,
                            snakemake.output.xfm, snakemake.params.transform, j.workdir)
    j.sidecar(snakemake.output.xfm, facts)
