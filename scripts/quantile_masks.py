"""Rule quantile_masks: every scenario's top-N quantile masks of one session."""
from gamer_mril.assessment.masks import run_quantile_masks

i, o, w = snakemake.input, snakemake.output, snakemake.wildcards
run_quantile_masks([i.qT1, i.MWF, i.NDI], i.cerebrum, i.relmaps, o.masks, o.values,
                   levels=snakemake.params.levels, subject=w.subject, session=w.session,
                   log_file=snakemake.log[0], threads=snakemake.threads)
