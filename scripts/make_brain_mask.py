"""Step 2 (METHOD.md 2.2): brain mask on the qT1 grid."""
from gamer_mril.jobs import job
from gamer_mril.preprocessing import step_brain_mask

with job(snakemake, seed=snakemake.params.seed) as j:
    given = snakemake.input.given[0] if len(snakemake.input.given) else None
    facts = step_brain_mask(snakemake.input.t1map, snakemake.output.mask,
                            snakemake.params.method, j.workdir,
                            snakemake.params.template_resolution, given_mask=given)
    j.sidecar(snakemake.output.mask, facts)
