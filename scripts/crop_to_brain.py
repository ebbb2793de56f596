"""Step 5 (METHOD.md 2.5): crop to a fixed matrix centred on the brain."""
from gamer_mril.jobs import job
from gamer_mril.preprocessing import step_crop

i, o = snakemake.input, snakemake.output
with job(snakemake) as j:
    names = ("t1map", "mwfmap", "ndimap")
    facts = step_crop({n: i[n] for n in names}, i.mask, tuple(snakemake.params.shape),
                      {n: o[n] for n in names}, o.mask, o.box, j.provenance())
    for name in names + ("mask",):
        j.sidecar(o[name], facts)
