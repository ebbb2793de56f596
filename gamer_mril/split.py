"""Subject-level split into a held-out test set and stratified cross-validation folds.

See docs/method.md#3-split. Every session carries its own label (severe: EDSS >= 5), but
the unit of the split is the subject: all sessions of a subject go to the same set and the
same fold, so no subject is seen both in training and in evaluation. Subjects are
stratified by their label at baseline, their first session in natural sort order of the
session labels (``ses-2`` before ``ses-10``; for zero-padded labels this is plain sorted
order).

Algorithm (a seeded ``numpy.random.Generator``; input row order does not matter):

1. Per class c (baseline label 0 or 1), shuffle the class's subjects and hold out the first
   ``max(1, floor(test_fraction * n_c + 0.5))`` of them as the test set (none when
   ``test_fraction == 0``). Rounding per class keeps the test set's class proportion as
   close to the cohort's as whole subjects allow; at least one subject per class makes the
   test AUC defined.
2. The remaining subjects (class 0 first, then class 1, each in its shuffled order) are
   dealt round-robin into ``n_folds`` folds, starting at a random fold. Each fold then
   holds ``floor`` or ``ceil`` of ``n_c / n_folds`` subjects of each class c, and
   ``floor`` or ``ceil`` of ``n / n_folds`` subjects in all: a stratified k-fold over
   subjects.

With these counts, a group of ``n_G`` subjects (test set or one fold) has a fraction of
severe subjects within ``1 / n_G`` (test set) or ``(1 + 1 / n_folds) / n_G`` (a fold) of
the whole cohort's fraction.

The split table has one row per session: ``subject``, ``session``, ``edss``, ``label``
(0/1), ``set`` (``"test"`` or ``"cv"``) and ``fold`` (0 .. n_folds-1 for ``cv``, -1 for
``test``).
"""

from __future__ import annotations

import itertools
import math
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

#: EDSS at or above this is severe disability (label 1).
SEVERE_EDSS = 5.0

#: Columns of a split table, in order.
SPLIT_COLUMNS = ("subject", "session", "edss", "label", "set", "fold")

TEST, CV = "test", "cv"


def severity_label(edss) -> np.ndarray:
    """1 where EDSS >= 5 (severe), else 0."""
    return (np.asarray(edss, dtype=float) >= SEVERE_EDSS).astype(int)


def natural_key(text: str) -> tuple:
    """Sort key that orders digit runs by value: ``ses-2`` < ``ses-10``."""
    parts = re.split(r"(\d+)", str(text))
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


def make_split(table: pd.DataFrame, test_fraction: float = 0.2, n_folds: int = 3,
               seed: int = 0) -> pd.DataFrame:
    """Assign every session to the test set or to one cross-validation fold.

    ``table`` needs the columns ``subject``, ``session`` and ``edss`` (others are
    ignored), one row per session. Returns the split table described in the module
    docstring, sorted by subject and session. The same table and seed give the same split.
    Raises ``ValueError`` on a malformed table or when a class has too few subjects for
    the requested test set and folds.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if isinstance(n_folds, bool) or int(n_folds) != n_folds or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    n_folds = int(n_folds)
    sessions = _validated_sessions(table)

    baseline = sessions.groupby("subject", sort=False).first()["label"]   # rows are sorted
    rng = np.random.default_rng(seed)
    test_subjects, cv_order = [], []       # cv_order: class 0 then class 1, each shuffled
    for cls in (0, 1):
        subjects = sorted(baseline.index[baseline == cls], key=_sort_key)
        n_test = _n_test(len(subjects), test_fraction)
        if len(subjects) - n_test < n_folds:
            need = next(n for n in itertools.count(n_folds)
                        if n - _n_test(n, test_fraction) >= n_folds)
            kind = "severe (EDSS >= 5)" if cls else "mild (EDSS < 5)"
            raise ValueError(
                f"too few {kind} subjects at baseline: {len(subjects)}; a test fraction of "
                f"{test_fraction} and {n_folds} folds need at least {need}, so that every "
                f"fold{' and the test set' if test_fraction > 0 else ''} holds one")
        shuffled = [subjects[i] for i in rng.permutation(len(subjects))]
        test_subjects += shuffled[:n_test]
        cv_order += shuffled[n_test:]
    start = int(rng.integers(n_folds))
    folds = {subject: (start + i) % n_folds for i, subject in enumerate(cv_order)}
    folds.update({subject: -1 for subject in test_subjects})

    out = sessions[["subject", "session", "edss", "label"]].copy()
    out["fold"] = out["subject"].map(folds).astype(int)
    out["set"] = np.where(out["fold"] < 0, TEST, CV)
    out = out[list(SPLIT_COLUMNS)].reset_index(drop=True)
    check_split(out)
    return out


def check_split(split_df: pd.DataFrame) -> None:
    """Raise ``ValueError`` if the split table is inconsistent or leaks a subject.

    Checks the columns, that each (subject, session) appears once, that ``set`` is
    ``test`` or ``cv`` with ``fold`` -1 for test and >= 0 for cv, and that no subject
    appears in two sets or two folds (the message names the subject).
    """
    missing = [c for c in SPLIT_COLUMNS if c not in split_df.columns]
    if missing:
        raise ValueError(f"split table lacks columns {missing}")
    df = split_df.astype({"subject": str, "session": str})
    dup = df.duplicated(["subject", "session"], keep=False)
    if dup.any():
        row = df[dup].iloc[0]
        raise ValueError(f"session {row['session']} of subject {row['subject']} is listed "
                         f"{int(dup.sum())} times in the split")
    bad_set = ~df["set"].isin([TEST, CV])
    if bad_set.any():
        row = df[bad_set].iloc[0]
        raise ValueError(f"subject {row['subject']}: set must be '{TEST}' or '{CV}', "
                         f"got {row['set']!r}")
    fold = pd.to_numeric(df["fold"], errors="coerce")
    bad_fold = fold.isna() | (fold != fold.round()) | ((df["set"] == TEST) & (fold != -1)) \
        | ((df["set"] == CV) & (fold < 0))
    if bad_fold.any():
        row = df[bad_fold].iloc[0]
        raise ValueError(f"subject {row['subject']}: fold {row['fold']!r} does not fit set "
                         f"{row['set']!r} (test rows have fold -1, cv rows a fold >= 0)")
    places = df.assign(fold=fold.astype(int)).groupby("subject")[["set", "fold"]].nunique()
    leaks = places[(places["set"] > 1) | (places["fold"] > 1)].index.tolist()
    if leaks:
        subject = leaks[0]
        rows = df["subject"] == subject
        where = sorted(set(zip(df.loc[rows, "set"], fold[rows].astype(int))))
        raise ValueError(f"subject {subject} is split across sets/folds {where}"
                         + (f" ({len(leaks)} subjects leak in all)" if len(leaks) > 1 else ""))


def write_split(df: pd.DataFrame, path) -> None:
    """Check the split and write it as a TSV, atomically (temporary file + rename)."""
    check_split(df)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            df[list(SPLIT_COLUMNS)].to_csv(fh, sep="\t", index=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_split(path) -> pd.DataFrame:
    """Read a split TSV written by :func:`write_split` (labels kept as text) and check it."""
    df = pd.read_csv(path, sep="\t", dtype={"subject": str, "session": str, "set": str},
                     keep_default_na=False)
    df = df.astype({"edss": float, "label": int, "fold": int})
    check_split(df)
    return df


def _n_test(n_class: int, test_fraction: float) -> int:
    """Test subjects taken from a class of ``n_class``: rounded share, at least one."""
    if test_fraction == 0:
        return 0
    return max(1, math.floor(test_fraction * n_class + 0.5))


def _validated_sessions(table: pd.DataFrame) -> pd.DataFrame:
    """Subject, session, edss, label per session, sorted by subject then session."""
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in ("subject", "session", "edss") if c not in table.columns]
    if missing:
        raise ValueError(f"participants table lacks columns {missing}")
    if table.empty:
        raise ValueError("participants table has no rows")
    df = table[["subject", "session", "edss"]].copy()
    for col in ("subject", "session"):
        empty = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if empty.any():
            raise ValueError(f"row {df.index[empty][0]}: empty {col}")
        df[col] = df[col].astype(str)
    edss = pd.to_numeric(df["edss"], errors="coerce")
    bad = edss.isna() | (edss < 0) | (edss > 10)
    if bad.any():
        row = df[bad].iloc[0]
        raise ValueError(f"subject {row['subject']} session {row['session']}: EDSS "
                         f"{row['edss']!r} is not a number in [0, 10]")
    df["edss"] = edss.astype(float)
    dup = df.duplicated(["subject", "session"])
    if dup.any():
        row = df[dup].iloc[0]
        raise ValueError(f"subject {row['subject']} session {row['session']} appears more "
                         f"than once in the participants table")
    df["label"] = severity_label(df["edss"])
    order = sorted(range(len(df)), key=lambda i: (_sort_key(df["subject"].iat[i]),
                                                  _sort_key(df["session"].iat[i])))
    return df.iloc[order].reset_index(drop=True)


def _sort_key(text: str) -> tuple:
    """Natural order, ties (``ses-1`` and ``ses-01``) broken by the text itself."""
    return natural_key(text), str(text)


def run_split_sessions(table_path, out, *, test_fraction: float, n_folds: int, seed: int,
                       log_file=None, threads: int = 1) -> None:
    """Rule split_sessions: held-out test subjects, then stratified subject-grouped folds."""
    from .inputs import load_participants
    from .jobs import step

    params = {"test_fraction": test_fraction, "n_folds": n_folds, "seed": seed}
    with step("split_sessions", inputs={"table": table_path}, params=params, outputs=[out],
              log_file=log_file, threads=threads) as s:
        split = make_split(load_participants(table_path), test_fraction=test_fraction,
                           n_folds=n_folds, seed=seed)
        write_split(split, out)
        s.sidecar(out, {"sessions_per_set": {k: int(v) for k, v
                                             in split["set"].value_counts().items()}})
