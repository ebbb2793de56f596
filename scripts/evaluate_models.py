"""Rule evaluate_models: Table II, attention weights, ROC curves, assessment predictions."""
from gamer_mril.evaluation import run_evaluate_models

i, o = snakemake.input, snakemake.output
run_evaluate_models(list(i.val), list(i.test), o.table, o.attention, o.roc, o.predictions,
                    log_file=snakemake.log[0], threads=snakemake.threads)
