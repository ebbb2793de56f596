"""The jobs of the training rules: one function per rule of rules/training.smk, each inside
:func:`gamer_mril.jobs.step` (inputs hashed, sidecars written, log kept).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .. import CONTRASTS
from ..evaluation import frozen_predictions
from ..io import atomic_write_text
from ..modelfiles import best_fold, fold_of, read_model_meta
from .cache import build_cache, open_cache
from .prediction import load_model, predict
from .restarts import train_fold
from .runtime import model_precision, resolve_device


def run_build_cache(table_path, maps: Mapping, images_out, index_out, *,
                    log_file=None, threads: int = 1) -> None:
    """Rule build_cache: every session's network inputs decoded once into one
    memory-mapped array. ``maps``: {contrast: [every session's preprocessed map]}."""
    from ..inputs import load_participants
    from ..jobs import step
    from ..layout import session_of

    inputs = {"table": table_path, **dict({c: list(maps[c]) for c in CONTRASTS})}
    with step("build_cache", inputs=inputs, outputs=[images_out, index_out],
              log_file=log_file, threads=threads) as s:
        table = load_participants(table_path)
        paths = {c: {session_of(p): p for p in maps[c]} for c in CONTRASTS}
        rows = [dict(subject=r.subject, session=r.session, age=r.age, edss=r.edss,
                     paths={c: paths[c][(str(r.subject), str(r.session))]
                            for c in CONTRASTS})
                for r in table.itertuples()]
        build_cache(rows, Path(images_out).parent)
        for out in (images_out, index_out):
            s.sidecar(out, {"sessions": len(rows)})


def run_train_fold(images, index, split_path, fold: int, weights_out, outputs: Sequence, *,
                   training: Mapping, threads: int = 1, log_file=None) -> None:
    """Rule train_fold: the model of one cross-validation fold, written into the folder of
    ``weights_out``; ``outputs``: every file the rule declares there (weights, model.json,
    epochs.tsv, val_predictions.tsv); ``training``: the training job's settings under their
    config names (``settings.TrainingSettings.job_settings``), each a keyword of
    :func:`~.restarts.train_fold` and :func:`~.loop.train_one`; fold k trains with seed
    ``seed + k``."""
    import logging

    from ..jobs import step
    from ..split import read_split

    t = dict(training)
    out_dir = Path(weights_out).parent
    with step("train_fold", inputs={"images": images, "index": index, "split": split_path},
              params={"training": t}, outputs=outputs, log_file=log_file,
              threads=threads) as s:
        log = logging.getLogger("gamer_mril").info
        cache = open_cache(Path(images).parent)
        split = read_split(split_path)
        cv = split[split["set"] == "cv"]
        train, val = cv[cv.fold != fold], cv[cv.fold == fold]
        summary = train_fold(
            cache, cache.rows_for(zip(train.subject, train.session)),
            cache.rows_for(zip(val.subject, val.session)), out_dir,
            **{**t, "seed": t["seed"] + fold}, device="auto", log=log, num_threads=threads)
        s.sidecar(weights_out, {k: summary[k] for k in
                                ("best_epoch", "epochs_run", "val_auc", "n_train", "n_val",
                                 "device", "restart", "restarts")})
        log("fold %d: restart %d of %d, best epoch %s, validation AUC %s, %s", fold,
            summary["restart"] + 1, len(summary["restarts"]), summary["best_epoch"],
            summary["val_auc"], summary["device"])


def run_predict_test(images, split_path, weights, out, *, threads: int = 1,
                     log_file=None) -> None:
    """Rule predict_test: the held-out test sessions scored by one fold's model
    (``weights``: its model.safetensors)."""
    from ..jobs import step
    from ..split import read_split

    model_dir = Path(weights).parent
    with step("predict_test", inputs={"images": images, "split": split_path,
                                      "model": str(weights)},
              outputs=[out], log_file=log_file, threads=threads):
        device = resolve_device("auto")
        cache = open_cache(Path(images).parent)
        split = read_split(split_path)
        test = split[split["set"] == "test"]
        model = load_model(model_dir, device=device)
        pred = predict(model, cache, cache.rows_for(zip(test.subject, test.session)),
                       device=device, precision=model_precision(model_dir))
        atomic_write_text(out, pred.to_csv(sep="\t", index=False))


def run_predict_sessions(images, model_dirs: Sequence, predictions_out, performance_out, *,
                         threads: int = 1, log_file=None) -> None:
    """Rule predict_sessions (frozen-model mode): every session scored by every given
    fold model; the best fold's model is the one that explains."""
    from ..jobs import step

    with step("predict_sessions", inputs={"images": images},
              params={"models": [str(d) for d in model_dirs]},
              outputs=[predictions_out, performance_out], log_file=log_file,
              threads=threads):
        device = resolve_device("auto")
        cache = open_cache(Path(images).parent)
        rows = list(range(len(cache)))
        dirs = {fold_of(d): Path(d) for d in model_dirs}
        preds = {k: predict(load_model(d, device=device), cache, rows, device=device,
                            precision=model_precision(d))
                 for k, d in dirs.items()}
        best = best_fold({k: read_model_meta(d) for k, d in dirs.items()})
        table, performance = frozen_predictions(preds, best)
        atomic_write_text(predictions_out, table.to_csv(sep="\t", index=False))
        atomic_write_text(performance_out,
                          performance.to_csv(sep="\t", index=False, na_rep="NaN"))
