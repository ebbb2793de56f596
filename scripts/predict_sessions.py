"""Frozen-model mode: every session of the table scored by every given fold model."""
from pathlib import Path

from gamer_mril.io import atomic_write_text
from gamer_mril.jobs import job
from gamer_mril.modelfiles import best_fold, read_model_meta
from gamer_mril.training import frozen_predictions, load_model, open_cache, predict, resolve_device

with job(snakemake) as j:
    device = resolve_device("auto")
    cache = open_cache(Path(snakemake.input.images).parent)
    rows = list(range(len(cache)))
    dirs = {int(Path(p).parent.name.split("-", 1)[1]): Path(p).parent
            for p in snakemake.input.weights}
    preds = {k: predict(load_model(d, device=device), cache, rows, device=device)
             for k, d in dirs.items()}
    best = best_fold({k: read_model_meta(d) for k, d in dirs.items()})
    table, performance = frozen_predictions(preds, best)
    atomic_write_text(snakemake.output.predictions, table.to_csv(sep="\t", index=False))
    atomic_write_text(snakemake.output.performance, performance.to_csv(sep="\t", index=False, na_rep="NaN"))
