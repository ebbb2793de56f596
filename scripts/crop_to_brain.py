"""Rule crop_to_brain (step 5): a fixed matrix centred on the brain."""
from gamer_mril import CONTRASTS
from gamer_mril.preprocessing import run_crop_to_brain

i, o, w = snakemake.input, snakemake.output, snakemake.wildcards
run_crop_to_brain({c: i[c] for c in CONTRASTS}, i.mask, {c: o[c] for c in CONTRASTS},
                  o.mask, o.box, crop_shape=snakemake.params.crop_shape, subject=w.subject,
                  session=w.session, log_file=snakemake.log[0], threads=snakemake.threads)
