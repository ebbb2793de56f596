"""Step 4 (METHOD.md 2.4): resampling into the NDI grid, brain mask applied."""
from gamer_mril.jobs import job
from gamer_mril.preprocessing import step_resample_to_ndi

i, o = snakemake.input, snakemake.output
with job(snakemake) as j:
    facts = step_resample_to_ndi(
        i.ndi, {"qT1": i.t1map, "MWF": i.mwfmap}, {"qT1": i.xfm_t1map, "MWF": i.xfm_mwfmap},
        i.mask, {"qT1": o.t1map, "MWF": o.mwfmap, "NDI": o.ndimap}, o.mask)
    for name in ("t1map", "mwfmap", "ndimap", "mask"):
        j.sidecar(o[name], facts)
