"""One training job: the model of one cross-validation fold (METHOD.md 5)."""
import logging
from pathlib import Path

from gamer_mril.jobs import job
from gamer_mril.split import read_split
from gamer_mril.training import open_cache, train_fold

with job(snakemake) as j:
    fold = int(snakemake.wildcards.fold)
    cache = open_cache(Path(snakemake.input.images).parent)
    split = read_split(snakemake.input.split)
    cv = split[split["set"] == "cv"]
    train = cv[cv.fold != fold]
    val = cv[cv.fold == fold]
    t = dict(snakemake.params.training)
    log = logging.getLogger("gamer_mril").info
    summary = train_fold(
        cache, cache.rows_for(zip(train.subject, train.session)),
        cache.rows_for(zip(val.subject, val.session)), Path(snakemake.output.weights).parent,
        epochs=t["epochs"], batch_size=t["batch_size"], lr=t["lr"],
        weight_decay=t["weight_decay"], seed=t["seed"] + fold, augment_cfg=t.get("augment"),
        growth=t.get("growth", 4), device="auto", log=log, num_threads=snakemake.threads)
    j.sidecar(snakemake.output.weights,
              {k: summary[k] for k in ("best_epoch", "val_auc", "n_train", "n_val", "device")})
    log("fold %d: best epoch %s, validation AUC %s, %s", fold, summary["best_epoch"],
        summary["val_auc"], summary["device"])
