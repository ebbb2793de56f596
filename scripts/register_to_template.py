"""Step 6 (METHOD.md 2.6): registration of the session to MNI152 (affine + SyN)."""
from gamer_mril.jobs import job
from gamer_mril.preprocessing import step_register_template

o = snakemake.output
with job(snakemake, seed=snakemake.params.seed) as j:
    out = {"affine": o.affine, "warp": o.warp, "inverse_warp": o.inverse_warp}
    facts = step_register_template(snakemake.input.t1map, snakemake.input.mask,
                                   snakemake.params.template_resolution,
                                   snakemake.params.transform, j.workdir, out)
    for path in out.values():
        j.sidecar(path, facts)
