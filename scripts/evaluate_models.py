"""Rule evaluate_models: Table II, the network against the baselines, attention weights,
ROC, training and reliability figures, assessment predictions."""
from gamer_mril.evaluation import run_evaluate_models

i, o = snakemake.input, snakemake.output
run_evaluate_models(list(i.val), list(i.test), o.table, o.attention, o.roc, o.predictions,
                    baselines=i.baselines, comparison_out=o.comparison,
                    epochs_paths=list(i.epochs), curves_out=o.curves,
                    reliability_out=o.reliability, log_file=snakemake.log[0],
                    threads=snakemake.threads)
