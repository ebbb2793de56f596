"""Training and prediction of the GAMER-MRIL classifier (docs/method.md#5-training).

The pieces, in the order a fold is trained, one submodule each:

* :mod:`~gamer_mril.training.cache`: the session cache, every session's three preprocessed
  maps decoded once into one memory-mapped float16 array (``images.npy``, ``index.tsv``);
* :mod:`~gamer_mril.training.augmentation`: flips, 90-degree turns, rotation and scale,
  noise, one draw per sample shared by its contrasts (training batches only);
* :mod:`~gamer_mril.training.loss`: the EDSS-weighted BCE and the class-balanced sampler;
* :mod:`~gamer_mril.training.runtime`: device, precision (fp32 / bf16 autocast), threads,
  deterministic algorithms and the seeds of a run's random streams;
* :mod:`~gamer_mril.training.loop`: one model trained (AdamW, validation each epoch), with
  its output files;
* :mod:`~gamer_mril.training.selection`: the epoch a run keeps (:data:`SELECTIONS`);
* :mod:`~gamer_mril.training.restarts`: a fold trained from several random starts, the
  best kept (:func:`train_fold`);
* :mod:`~gamer_mril.training.prediction`: a saved model loaded and sessions scored
  (logit, probability, attention weights);
* :mod:`~gamer_mril.training.jobs`: the jobs of the rules in rules/training.smk (one
  function each).

Table II, the attention summary and the ROC figure are made from the predictions by
:mod:`gamer_mril.evaluation`. The names callers use are re-exported here. Nothing here
imports snakemake.
"""

from .augmentation import AUGMENT_DEFAULTS, apply_augmentation, augment, draw_augmentation
from .cache import INDEX_COLUMNS, INDEX_FILE, IMAGES_FILE, SessionCache, build_cache, open_cache
from .jobs import run_build_cache, run_predict_sessions, run_predict_test, run_train_fold
from .loop import EPOCH_COLUMNS, EPOCHS_FILE, LR_SCHEDULES, VAL_PREDICTIONS, train_one
from .loss import balanced_sampler, class_balance_weights, sample_weights, weighted_bce
from .prediction import load_model, predict
from .restarts import RESTARTS_FILE, train_fold
from .runtime import PRECISIONS, autocast, model_precision, resolve_device
from .selection import SELECTIONS

__all__ = [
    "AUGMENT_DEFAULTS", "EPOCH_COLUMNS", "EPOCHS_FILE", "IMAGES_FILE", "INDEX_COLUMNS",
    "INDEX_FILE", "LR_SCHEDULES", "PRECISIONS", "RESTARTS_FILE", "SELECTIONS",
    "VAL_PREDICTIONS", "SessionCache", "apply_augmentation", "augment", "autocast",
    "balanced_sampler", "build_cache", "class_balance_weights", "draw_augmentation",
    "load_model", "model_precision", "open_cache", "predict", "resolve_device",
    "run_build_cache", "run_predict_sessions", "run_predict_test", "run_train_fold",
    "sample_weights", "train_fold", "train_one", "weighted_bce",
]
