"""Rule preprocessing_qc: one row of quality-control figures per session, flagged."""
from gamer_mril.qc import run_preprocessing_qc

i, p = snakemake.input, snakemake.params
run_preprocessing_qc([*i.brain_mask, *i.scaled, *i.ndi_grid, *i.cerebellum, *i.template_mask,
                      *i.crop_mask],
                     snakemake.output.tsv, min_dice=p.min_dice, mad_limit=p.mad_limit,
                     log_file=snakemake.log[0], threads=snakemake.threads,
                     max_clipped_share=p.max_clipped_share,
                     max_crop_cut_share=p.max_crop_cut_share)
