"""Rule crop_to_brain (step 5): a fixed matrix centred on the brain."""
from gamer_mril import CONTRASTS
from gamer_mril.preprocessing_jobs import run_crop_to_brain

i, o, w, p = snakemake.input, snakemake.output, snakemake.wildcards, snakemake.params
run_crop_to_brain({c: i[c] for c in CONTRASTS}, i.mask, {c: o[c] for c in CONTRASTS},
                  o.mask, o.box, crop_shape=p.crop_shape, subject=w.subject,
                  session=w.session, log_file=snakemake.log[0], threads=snakemake.threads,
                  max_crop_cut_share_stop=p.max_crop_cut_share_stop)
