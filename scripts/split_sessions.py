"""Rule split_sessions: test subjects held out, then stratified subject-grouped folds."""
from gamer_mril.split import run_split_sessions

p = snakemake.params
run_split_sessions(snakemake.input.table, snakemake.output.tsv, test_fraction=p.test_fraction,
                   n_folds=p.n_folds, seed=p.seed,
                   log_file=snakemake.log[0], threads=snakemake.threads)
