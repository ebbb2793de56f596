"""Rule resample_to_ndi (step 4): qT1 and MWF into the NDI grid, the brain mask applied."""
from gamer_mril.layout import KEY
from gamer_mril.preprocessing import run_resample_to_ndi

i, o, w = snakemake.input, snakemake.output, snakemake.wildcards
run_resample_to_ndi(i.ndimap, {"qT1": i.t1map, "MWF": i.mwfmap},
                    {"qT1": i.xfm_t1map, "MWF": i.xfm_mwfmap}, i.mask,
                    {c: o[k] for c, k in KEY.items()}, o.mask, subject=w.subject,
                    session=w.session, log_file=snakemake.log[0], threads=snakemake.threads)
