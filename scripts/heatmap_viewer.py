"""Rule heatmap_viewer: the chosen scenario's severe-group heatmap, interactive (HTML)."""
from gamer_mril.viewer import run_heatmap_viewer

i = snakemake.input
run_heatmap_viewer(i.chosen, {int(k[5:]): v for k, v in i.items() if k.startswith("heat_")},
                   i.template, snakemake.output.html, group="severe",
                   log_file=snakemake.log[0], threads=snakemake.threads)
