"""Rule group_relevance_stats: severe vs mild on the normalised relevance in MNI152."""
from gamer_mril.assessment.groupstats_jobs import run_group_relevance_stats

i, o, p = snakemake.input, snakemake.output, snakemake.params
run_group_relevance_stats(list(i.relnorm), i.predictions, i.participants, i.brain_mask,
                          i.cerebellum, i.template, i.chosen,
                          {(n, k): o[key] for key, (n, k) in p.outputs.items()},
                          clusters_out=o.clusters, figure_out=o.figure,
                          fig_scenarios=p.fig_scenarios,
                          group_permutations=p.group_permutations, seed=p.seed,
                          log_file=snakemake.log[0], threads=snakemake.threads)
