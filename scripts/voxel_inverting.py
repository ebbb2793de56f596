"""Rule voxel_inverting: AUC after voxel inverting per scenario and N (Fig. 4), the AOPC
with its band and the chosen scenario."""
from gamer_mril.assessment.inverting import run_voxel_inverting

i, o = snakemake.input, snakemake.output
p = snakemake.params
run_voxel_inverting(list(i.sessions), i.predictions, o.tsv, o.figure, o.scenarios,
                    n_bootstrap=p.n_bootstrap, seed=p.seed, heatmap_level=p.heatmap_level,
                    choice=p.choice, choice_levels=p.choice_levels,
                    log_file=snakemake.log[0], threads=snakemake.threads)
