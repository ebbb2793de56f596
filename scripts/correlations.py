"""Rule correlations: the chosen scenario and Tables III and IV."""
from gamer_mril.assessment.correlation import run_correlations

i, o, p = snakemake.input, snakemake.output, snakemake.params
run_correlations(list(i.values), i.inverting, i.participants, chosen_out=o.chosen,
                 long_out=o.long, table_iii_out=o.table_iii, table_iv_out=o.table_iv,
                 figure_out=o.figure, n_permutations=p.n_permutations, seed=p.seed,
                 n_bootstrap=p.n_bootstrap, heatmap_level=p.heatmap_level,
                 choice=p.choice, choice_levels=p.choice_levels,
                 log_file=snakemake.log[0], threads=snakemake.threads)
