"""Step 7 (METHOD.md 2.7): cerebellum removal through the inverse template transform."""
from gamer_mril.jobs import job
from gamer_mril.preprocessing import step_remove_cerebellum

i, o = snakemake.input, snakemake.output
with job(snakemake) as j:
    names = ("t1map", "mwfmap", "ndimap")
    xfm = {"affine": i.affine, "warp": i.warp, "inverse_warp": i.inverse_warp}
    facts = step_remove_cerebellum({n: i[n] for n in names}, i.mask, xfm,
                                   i.cerebellum, {n: o[n] for n in names},
                                   o.cerebellum, o.cerebrum)
    for name in names + ("cerebellum", "cerebrum"):
        j.sidecar(o[name], facts)
