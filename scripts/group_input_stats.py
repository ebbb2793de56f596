"""Rule group_input_stats: severe vs mild on the network inputs in MNI152."""
from gamer_mril.assessment.groupstats_jobs import run_group_input_stats

i, o, p = snakemake.input, snakemake.output, snakemake.params
run_group_input_stats(list(i.maps), i.predictions, i.participants, i.brain_mask,
                      i.cerebellum, i.template,
                      {(c, k): o[key] for key, (c, k) in p.outputs.items()},
                      clusters_out=o.clusters, figure_out=o.figure,
                      group_permutations=p.group_permutations, seed=p.seed,
                      log_file=snakemake.log[0], threads=snakemake.threads)
