"""Rule warp_brain_mask_to_template: quality control of step 6."""
from gamer_mril.layout import TEMPLATE_XFM_KEYS
from gamer_mril.preprocessing_jobs import run_warp_brain_mask_to_template

i, w = snakemake.input, snakemake.wildcards
run_warp_brain_mask_to_template(i.mask, {k: v for k, v in i.items() if k in TEMPLATE_XFM_KEYS},
                                i.template_mask, snakemake.output.mask,
                                qt1=i.qT1, out_qt1=snakemake.output.qT1,
                                subject=w.subject, session=w.session,
                                log_file=snakemake.log[0], threads=snakemake.threads)
