"""Rule relevance_reportlet: the chosen scenario's top-N mask over the session's NDI map."""
from gamer_mril.reportlets import run_relevance_reportlet

i, w = snakemake.input, snakemake.wildcards
run_relevance_reportlet(i.NDI, i.crop_mask, i.masks, i.chosen, snakemake.output.svg, heatmap_level=snakemake.params.heatmap_level,
                        subject=w.subject, session=w.session,
                        log_file=snakemake.log[0], threads=snakemake.threads)
