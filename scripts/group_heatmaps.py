"""Rule group_heatmaps: group heatmaps in MNI152 and Fig. 6."""
from gamer_mril.assessment.heatmaps import run_group_heatmaps

i, o, p = snakemake.input, snakemake.output, snakemake.params
run_group_heatmaps(i.chosen, i.predictions, i.template,
                   list(i.top),
                   {(n, g): o[k] for k, (n, g) in p.heatmaps.items()},
                   figure_out=o.figure, peaks_out=o.peaks, fig6_scenarios=p.fig6_scenarios,
                   groups=p.groups, heatmap_level=p.heatmap_level,
                   log_file=snakemake.log[0], threads=snakemake.threads)
