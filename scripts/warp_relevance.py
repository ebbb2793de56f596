"""Rule warp_relevance: every scenario's relevance of one session, normalised, in MNI152."""
from gamer_mril.layout import TEMPLATE_XFM_KEYS
from gamer_mril.assessment.groupstats_jobs import run_warp_relevance

i, o, p, w = snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards
run_warp_relevance(i.relmaps, i.cerebrum, {k: v for k, v in i.items() if k in TEMPLATE_XFM_KEYS},
                   o.relnorm, screen_voxel_mm=p.screen_voxel_mm,
                   subject=w.subject, session=w.session,
                   log_file=snakemake.log[0], threads=snakemake.threads)
