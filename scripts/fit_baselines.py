"""Rule fit_baselines: the baseline classifiers' per-fold predictions."""
from gamer_mril.baselines import run_fit_baselines

i = snakemake.input
run_fit_baselines(list(i.means), i.participants, i.split, snakemake.output.tsv,
                  template_maps=list(i.template_maps), seed=snakemake.params.seed,
                  log_file=snakemake.log[0], threads=snakemake.threads)
