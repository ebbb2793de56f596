"""Table II, attention weights, ROC curves, and each assessed session's prediction by the
model that explains it, from the fold models' predictions."""
from pathlib import Path

import pandas as pd

from gamer_mril.io import atomic_write_text
from gamer_mril.jobs import job
from gamer_mril.modelfiles import best_fold, read_model_meta
from gamer_mril.training import (assessment_predictions, mean_attention, mean_of_folds,
                                 plot_roc, table_ii)


def read(path):
    return pd.read_csv(path, sep="\t", dtype={"subject": str, "session": str})


with job(snakemake) as j:
    folds = [int(Path(p).parent.name.split("-", 1)[1]) for p in snakemake.input.val]
    val = {k: read(p) for k, p in zip(folds, snakemake.input.val)}
    test = {k: read(p) for k, p in zip(folds, snakemake.input.test)}
    table = table_ii(val, test)
    atomic_write_text(snakemake.output.table, table.to_csv(sep="\t", index=False))
    att = mean_attention(list(val.values()) + list(test.values()))
    atomic_write_text(snakemake.output.attention, att.to_csv(sep="\t", index=False))
    curves = {f"validation fold {k}": (v.label, v.prob) for k, v in val.items()}
    mean = mean_of_folds(test)
    curves["test, mean of folds"] = (mean.label, mean.prob)
    plot_roc(curves, snakemake.output.roc)
    best = best_fold({k: read_model_meta(Path(p).parent)
                      for k, p in zip(folds, snakemake.input.meta)})
    pred = assessment_predictions(val, test, best)
    atomic_write_text(snakemake.output.predictions, pred.to_csv(sep="\t", index=False))
