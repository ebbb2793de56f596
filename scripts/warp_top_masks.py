"""Rule warp_top_masks: every scenario's top-N mask of one session in MNI152."""
from gamer_mril.layout import TEMPLATE_XFM_KEYS
from gamer_mril.assessment.heatmaps import run_warp_top_masks

i, o, p, w = snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards
run_warp_top_masks(i.masks, {k: v for k, v in i.items() if k in TEMPLATE_XFM_KEYS},
                   i.template_mask, o.top,
                   levels=p.levels, heatmap_level=p.heatmap_level,
                   subject=w.subject, session=w.session,
                   log_file=snakemake.log[0], threads=snakemake.threads)
