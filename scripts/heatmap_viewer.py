"""Rule heatmap_viewer: the chosen scenario's severe-group heatmap, interactive (HTML)."""
from gamer_mril.viewer import run_heatmap_viewer

i = snakemake.input
run_heatmap_viewer(i.chosen, {int(k[5:]): v for k, v in i.items() if k.startswith("heat_")},
                   i.template, snakemake.output.html, group="severe",
                   relevance_stats={int(k[3:]): (v, i[f"rpfwe_{k[3:]}"])
                                    for k, v in i.items() if k.startswith("rt_")},
                   input_stats={k[3:]: (v, i[f"ipfwe_{k[3:]}"])
                                for k, v in i.items() if k.startswith("it_")},
                   log_file=snakemake.log[0], threads=snakemake.threads)
