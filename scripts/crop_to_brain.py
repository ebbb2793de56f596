"""Rule crop_to_brain (step 5): a fixed matrix centred on the brain."""
from gamer_mril.layout import KEY
from gamer_mril.preprocessing import run_crop_to_brain

i, o, w = snakemake.input, snakemake.output, snakemake.wildcards
run_crop_to_brain({c: i[k] for c, k in KEY.items()}, i.mask, snakemake.params.shape,
                  {c: o[k] for c, k in KEY.items()}, o.mask, o.box, subject=w.subject,
                  session=w.session, log_file=snakemake.log[0], threads=snakemake.threads)
