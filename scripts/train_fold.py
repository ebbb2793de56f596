"""Rule train_fold: the model of one cross-validation fold."""
from gamer_mril.training import run_train_fold

i = snakemake.input
run_train_fold(i.images, i.index, i.split, int(snakemake.wildcards.fold),
               snakemake.output.weights, list(snakemake.output),
               training=dict(snakemake.params.training),
               threads=snakemake.threads, log_file=snakemake.log[0])
