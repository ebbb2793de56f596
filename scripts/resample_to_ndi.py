"""Rule resample_to_ndi (step 4): qT1 and MWF into the NDI grid, the brain mask applied."""
from gamer_mril import CONTRASTS
from gamer_mril.preprocessing_jobs import run_resample_to_ndi

i, o, w = snakemake.input, snakemake.output, snakemake.wildcards
run_resample_to_ndi(i.NDI, {"qT1": i.qT1, "MWF": i.MWF},
                    {"qT1": i.xfm_qT1, "MWF": i.xfm_MWF}, i.mask,
                    {c: o[c] for c in CONTRASTS}, o.mask, subject=w.subject,
                    session=w.session, log_file=snakemake.log[0], threads=snakemake.threads)
