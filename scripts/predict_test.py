"""Rule predict_test: the held-out test sessions scored by one fold's model."""
from gamer_mril.training import run_predict_test

i = snakemake.input
run_predict_test(i.images, i.split, i.weights, snakemake.output.tsv, threads=snakemake.threads,
                 log_file=snakemake.log[0])
