"""The voxel inverting experiment (docs/method.md#73-voxel-inverting, the paper's Fig. 4;
the rules invert_session and voxel_inverting).

Per session (:func:`run_invert_session`), the model that explains it gives its
probability of "severe" for the session's inputs as they are and after ``x -> 1 - x``
inside every scenario's top-N mask (:func:`inverting_auc`, the only place the inversion
is done), and at the control levels inside the LeRF and random masks of
:mod:`gamer_mril.assessment.controls`. Over the cohort (:func:`run_voxel_inverting`) the
probabilities become the AUC per scenario and level (:func:`auc_table`), with intervals,
controls, and the workflow's chosen scenario (``assessment.choice``:
:func:`gamer_mril.assessment.controls.choose_by_aopc`, or the paper's
:func:`choose_scenario`, the largest AUC drop at ``assessment.heatmap_level``).

The model enters :func:`inverting_auc` only as a ``predict`` callable.

Repeated network inputs are answered once (:class:`gamer_mril.assessment.distinct.DistinctImages`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import nibabel as nib
import numpy as np
import pandas as pd

from ..explain import choose_model, load_network_inputs, model_files
from ..io import atomic_path, read_session_table, session_keys
from ..jobs import step
from ..progress import bar as progress_bar
from ..scenario_stack import load_stack
from ..settings import CHOICE_LEVELS
from ..split import read_split
from ..statistics import auc
from .controls import (choice_line, control_masks, control_summary,
                       inverting_intervals, scenario_table)
from .distinct import DistinctImages
from .figures import plot_inverting
from .masks import LEVELS, _check_level, _maps, contrast_first, masks_from_levels, \
    read_level_images

log = logging.getLogger("gamer_mril.assessment")


def _predict(predict, batch, ages) -> np.ndarray:
    prob = np.asarray(predict(batch, ages), dtype=np.float64).reshape(-1)
    if prob.shape != (batch.shape[0],):
        raise ValueError(f"predict returned {prob.size} values for {batch.shape[0]} sessions")
    return prob


def inverting_auc(predict: Callable, images, ages, labels, masks: Mapping,
                  levels: Sequence = LEVELS, batch_size: int = 4,
                  return_probabilities: bool = False, with_aucs: bool = True):
    """The voxel inverting experiment (docs/method.md#73-voxel-inverting, Fig. 4).

    ``predict(images_batch, ages_batch) -> probabilities``: images_batch a numpy array
    (B, L, D, H, W) (the dtype of ``images``), ages_batch (B,) float64; returns (B,)
    probabilities of "severe". It is called once per batch of ``batch_size`` sessions for
    the baseline, then on the inverted images of that batch, scenario by scenario, with
    at most ``batch_size`` images per call (several levels in one call when the batch
    holds fewer sessions, as for one session). A progress bar goes to the ``gamer_mril``
    logger.

    ``images``: the assessment set, (S, L, D, H, W), anything sliceable along the first
    axis (numpy array, ``numpy.memmap``); only ``batch_size`` sessions are read at a time.
    ``ages``, ``labels``: (S,), labels 0/1.
    ``masks``: ``{scenario: per_session}`` where ``per_session[i]`` is session ``i``'s bool
    masks, (len(levels), L, D, H, W) or (len(levels), D, H, W) (one mask shared by all
    contrasts, e.g. from a combined map). ``per_session`` may be an array, a memmap, a list
    or any lazy object with ``__getitem__`` (e.g. one that reads files), so the masks of all
    sessions never need to be in memory together.

    Memory: about ``batch_size`` x (3 image copies + the masks of one scenario).

    Returns a DataFrame with one row per scenario (ascending) and level: ``scenario``,
    ``N``, ``auc`` (after inverting), ``baseline_auc`` (no inverting; the same on every
    row), ``auc_drop`` (``baseline_auc - auc``) and ``n_sessions``. With
    ``return_probabilities=True``, also a long frame (``session``: the index in the
    assessment set, ``scenario``, ``N``, ``prob``), where the baseline has scenario 0 and
    N 0: ``(results, probabilities)``; with ``with_aucs=False`` as well, the AUCs are not
    computed (one session's, whose AUCs mean nothing) and ``results`` is None.
    """
    n_sessions = len(images)
    ages = np.asarray(ages, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if ages.shape != (n_sessions,) or labels.shape != (n_sessions,):
        raise ValueError(f"{n_sessions} sessions of images but {ages.size} ages and "
                         f"{labels.size} labels")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    levels = [int(n) if float(n).is_integer() else float(n)
              for n in (_check_level(n) for n in levels)]
    if len(set(levels)) != len(levels) or not levels:
        raise ValueError(f"levels must be distinct and non-empty, got {levels}")
    if not (with_aucs or return_probabilities):
        raise ValueError("with_aucs=False needs return_probabilities=True")
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    scenarios = sorted(masks)
    for s in scenarios:
        if len(masks[s]) != n_sessions:
            raise ValueError(f"scenario {s}: masks for {len(masks[s])} sessions, "
                             f"images for {n_sessions}")

    baseline = np.empty(n_sessions)
    probs = {s: np.empty((len(levels), n_sessions)) for s in scenarios}
    bar = progress_bar(-(-n_sessions // batch_size) * len(scenarios), "voxel inverting",
                       unit="scenario")
    for start in range(0, n_sessions, batch_size):
        stop = min(start + batch_size, n_sessions)
        batch = np.asarray(images[start:stop])
        if batch.ndim != 5:
            raise ValueError(f"images must be (S, L, D, H, W), a batch has shape "
                             f"{batch.shape}")
        batch_ages = ages[start:stop]
        baseline[start:stop] = _predict(predict, batch, batch_ages)
        flipped = np.asarray(1, dtype=batch.dtype) - batch
        for s in scenarios:
            m = np.stack([np.asarray(masks[s][i]) for i in range(start, stop)])
            if m.dtype != bool:
                raise ValueError(f"scenario {s}: masks must be boolean, not {m.dtype}")
            if m.ndim == 5:                                    # one mask for all contrasts
                m = m[:, :, None]
            if m.ndim != 6 or m.shape[1] != len(levels) or \
                    m.shape[2] not in (1, batch.shape[1]) or m.shape[3:] != batch.shape[2:]:
                raise ValueError(f"scenario {s}: a session's masks have shape "
                                 f"{m.shape[1:]}, expected ({len(levels)}, "
                                 f"{batch.shape[1]}, {', '.join(map(str, batch.shape[2:]))})")
            # the levels' inverted copies go through the model together, at most
            # batch_size images per call
            per_call = max(1, batch_size // len(batch_ages))
            for first in range(0, len(levels), per_call):
                ks = range(first, min(first + per_call, len(levels)))
                inverted = np.concatenate([np.where(m[:, k], flipped, batch) for k in ks])
                p = _predict(predict, inverted, np.tile(batch_ages, len(ks)))
                for j, k in enumerate(ks):
                    probs[s][k, start:stop] = p[j * len(batch_ages):(j + 1) * len(batch_ages)]
                del inverted
            bar.update()
        del batch, flipped
    bar.close()

    base_auc = auc(labels, baseline) if with_aucs else np.nan
    rows = []
    for s in scenarios if with_aucs else []:
        for k, n in enumerate(levels):
            a = auc(labels, probs[s][k])
            rows.append(dict(scenario=int(s), N=n, auc=a, baseline_auc=base_auc,
                             auc_drop=base_auc - a, n_sessions=n_sessions))
    result = pd.DataFrame(rows, columns=["scenario", "N", "auc", "baseline_auc",
                                         "auc_drop", "n_sessions"])
    if not return_probabilities:
        return result
    if not with_aucs:
        result = None
    idx = np.arange(n_sessions)
    parts = [pd.DataFrame(dict(session=idx, scenario=0, N=0, prob=baseline))]
    for s in scenarios:
        for k, n in enumerate(levels):
            parts.append(pd.DataFrame(dict(session=idx, scenario=int(s), N=n,
                                           prob=probs[s][k])))
    return result, pd.concat(parts, ignore_index=True)


def auc_table(probabilities: pd.DataFrame, labels: Mapping,
              groups: Mapping | None = None) -> pd.DataFrame:
    """AUC after inverting per scenario and level from the sessions' probabilities.

    ``probabilities``: long frame ``session``, ``scenario``, ``N``, ``prob``, the baseline
    (no inverting) as scenario 0, N 0; ``labels``: {session: 0/1}. Every session must have
    every (scenario, N) of the frame. Returns the columns of :func:`inverting_auc`; with
    ``groups`` ({session: the model that scored it}) also ``auc_within``,
    ``baseline_auc_within`` and ``auc_drop_within``: the AUC computed within each group
    of sessions scored by one model, averaged over the groups where it is defined, which
    does not depend on the models sharing one probability scale."""
    df = probabilities
    sessions = sorted(set(df["session"]))
    missing = set(sessions) - set(labels)
    if missing:
        raise ValueError(f"no label for sessions {sorted(missing)[:5]}")
    wide = df.pivot_table(index="session", columns=["scenario", "N"], values="prob",
                          aggfunc="first").reindex(sessions)
    if wide.isna().any().any():
        bad = wide.columns[wide.isna().any()].tolist()
        raise ValueError(f"probabilities missing for (scenario, N) {bad[:5]}")
    y = np.array([int(labels[s]) for s in sessions])
    if (0, 0) not in wide.columns:
        raise ValueError("no baseline (scenario 0, N 0) probabilities")
    base = auc(y, wide[(0, 0)].to_numpy())
    columns = ["scenario", "N", "auc", "baseline_auc", "auc_drop", "n_sessions"]
    if groups is not None:
        missing = set(sessions) - set(groups)
        if missing:
            raise ValueError(f"no model group for sessions {sorted(missing)[:5]}")
        g = np.array([str(groups[s]) for s in sessions])
        members = [g == name for name in sorted(set(g))]

        def within(values):
            aucs = [auc(y[m], values[m]) for m in members]
            aucs = [a for a in aucs if np.isfinite(a)]
            return float(np.mean(aucs)) if aucs else float("nan")

        base_within = within(wide[(0, 0)].to_numpy())
        columns += ["auc_within", "baseline_auc_within", "auc_drop_within"]
    rows = []
    for scn, n in sorted(c for c in wide.columns if c != (0, 0)):
        a = auc(y, wide[(scn, n)].to_numpy())
        row = dict(scenario=int(scn), N=int(n), auc=a, baseline_auc=base,
                   auc_drop=base - a, n_sessions=len(sessions))
        if groups is not None:
            w = within(wide[(scn, n)].to_numpy())
            row.update(auc_within=w, baseline_auc_within=base_within,
                       auc_drop_within=base_within - w)
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def choose_scenario(inverting_df: pd.DataFrame, n: int) -> int:
    """The scenario with the largest AUC drop (``baseline_auc - auc``) at level ``n``.

    Ties (drops within 1e-12) go to the lowest scenario number; scenarios with a NaN drop
    are ignored; ``ValueError`` when no scenario has a defined drop at ``n``.
    """
    df = inverting_df[inverting_df["N"] == n]
    drop = (df["baseline_auc"] - df["auc"]).to_numpy(np.float64)
    scen = df["scenario"].to_numpy()
    ok = np.isfinite(drop)
    if not ok.any():
        raise ValueError(f"no scenario has a defined AUC drop at N = {n}")
    best = drop[ok].max()
    return int(min(scen[ok][drop[ok] >= best - 1e-12]))


#: Inverted images per forward pass of one session's voxel inverting, on CPU and on CUDA
#: (on one CPU thread a batch of 4 costs about 0.77 of 4 single passes; larger batches
#: cost more per image).
INVERT_BATCH = {False: 4, True: 16}


def run_invert_session(maps: Sequence, model_dirs: Mapping, split_path, qmasks,
                       out, *, age: float, levels: Sequence, relmaps, cerebrum,
                       control_levels: Sequence = (), random_masks: int = 5, seed: int = 0,
                       subject, session, log_file=None, threads: int = 1) -> None:
    """Rule invert_session: the probability of the model that explains the session
    (:func:`gamer_mril.explain.choose_model`) after inverting inside every scenario's
    top-N mask (order MoRF), and without inverting (scenario 0, N 0); at
    ``control_levels`` also inside the least-relevant-first mask (LeRF) and ``random_masks``
    random masks (random, draw 0, 1, ...) of the same voxel counts in the cerebrum
    (:func:`gamer_mril.assessment.controls.control_masks`). ``qmasks`` / ``relmaps``: the scenario
    stacks of the level images / relevance maps; ``split_path``: None in frozen-model
    mode."""
    import torch     # the network runs in this job only; torch is not needed to import

    from ..training import autocast, model_precision

    levels = [int(n) for n in levels]
    control_levels = [int(n) for n in control_levels]
    if not set(control_levels) <= set(levels):
        raise ValueError(f"control levels {control_levels} must be among {levels}")
    inputs = {**_maps(maps), **({} if split_path is None else {"split": split_path}),
              "masks": qmasks, "relmaps": relmaps, "cerebrum": cerebrum}
    with step("invert_session", inputs=inputs,
              params={"age": float(age), "levels": levels,
                      "control_levels": control_levels, "random_masks": int(random_masks),
                      "seed": int(seed)},
              outputs=[out], log_file=log_file, threads=threads, subject=subject,
              session=session) as s:
        level_images, _ = read_level_images(qmasks)
        scenarios = sorted(level_images)
        s.params["scenarios"] = scenarios
        split = None if split_path is None else read_split(split_path)
        fold, model_dir = choose_model(model_dirs, subject, session, split)
        s.inputs["model"] = model_files(model_dir)
        s.params["fold"] = fold
        log.info("inverted by the model of fold %d (%s)", fold, model_dir)
        model, images, _, device = load_network_inputs(list(maps), model_dir)
        region = np.asarray(nib.load(cerebrum).dataobj) > 0

        precision = model_precision(model_dir)

        def forward(batch, ages):
            with torch.no_grad(), autocast(device, precision):
                x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
                a = torch.from_numpy(np.asarray(ages, dtype=np.float32)).to(device)
                x = x.contiguous(memory_format=torch.channels_last_3d)
                return model(x, a, return_details=True)["p"].double().cpu().numpy()

        # identical inverted images (the baseline, random draws shared by scenarios of
        # the same mask size, scenarios that pick the same voxels) go through the model once
        predict = DistinctImages(forward)

        batch_size = INVERT_BATCH[device.type == "cuda"]
        top = {n: masks_from_levels(level_images[n], levels) for n in scenarios}

        def invert(masks: Mapping, at_levels, order: str, draw: int = 0):
            _, p = inverting_auc(predict, images[None], [float(age)], [0],
                                   {n: [m] for n, m in masks.items()}, at_levels,
                                   batch_size=batch_size, return_probabilities=True,
                                   with_aucs=False)
            p.insert(0, "draw", draw)
            p.insert(0, "order", order)
            return p if order == "MoRF" else p[p["scenario"] > 0]

        parts = [invert(top, levels, "MoRF")]
        if control_levels:
            ks = [levels.index(n) for n in control_levels]
            relevance, _, _ = load_stack(relmaps, dtype=np.float32)
            if sorted(relevance) != scenarios:
                raise ValueError(f"{relmaps} holds scenarios {sorted(relevance)}, the "
                                 f"masks {qmasks} {scenarios}")
            controls = {}
            for n in scenarios:
                rel = contrast_first(relevance[n])
                # top[n]: (levels, V, D, H, W), or (levels, D, H, W) for a combined map
                controls[n] = control_masks(rel, region, top[n][ks], random_masks, seed,
                                            subject, session)
            parts.append(invert({n: c["LeRF"] for n, c in controls.items()}, control_levels,
                                "LeRF"))
            for d in range(int(random_masks)):
                parts.append(invert({n: c["random"][d] for n, c in controls.items()},
                                    control_levels, "random", d))
        log.info("%d inverted images asked for, %d distinct ones through the model in %d "
                 "calls", predict.asked, predict.images, predict.calls)
        probs = pd.concat(parts, ignore_index=True).drop(columns="session")
        probs.insert(0, "fold", fold)
        probs.insert(0, "session", session)
        probs.insert(0, "subject", subject)
        base = probs.loc[probs["scenario"] == 0, "prob"]
        log.info("baseline probability %.6f", float(base.iloc[0]))
        with atomic_path(out) as tmp:
            probs.to_csv(tmp, sep="\t", index=False)


def run_voxel_inverting(inverting_paths: Sequence, predictions_path, table_out, figure_out,
                        scenarios_out, *, heatmap_level: int, choice: str = "aopc",
                        choice_levels: Sequence = CHOICE_LEVELS, n_bootstrap: int = 2000,
                        seed: int = 0, log_file=None, threads: int = 1) -> None:
    """Rule voxel_inverting: AUC over the assessment set after inverting, per scenario
    and N (Fig. 4), from every session's inverting table, with its subject-grouped
    bootstrap interval and the LeRF and random controls where they were run; per scenario
    (``scenarios_out``, :func:`gamer_mril.assessment.controls.scenario_table`) the figures at
    ``heatmap_level``, the AOPC over ``choice_levels`` with its band, the workflow's
    choice (``choice``) beside the paper's (:func:`choose_scenario`) and the paired
    comparison with the chosen scenario."""
    level = int(heatmap_level)
    choice_levels = [int(n) for n in choice_levels]
    with step("voxel_inverting", inputs={"sessions": list(inverting_paths),
                                         "predictions": predictions_path},
              params={"heatmap_level": level, "choice": str(choice),
                      "choice_levels": choice_levels, "n_bootstrap": int(n_bootstrap),
                      "seed": int(seed)},
              outputs=[table_out, figure_out, scenarios_out], log_file=log_file,
              threads=threads):
        probs = pd.concat([read_session_table(p) for p in inverting_paths],
                          ignore_index=True)
        probs["key"] = session_keys(probs)
        pred = read_session_table(predictions_path)
        pred["key"] = session_keys(pred)
        labels = dict(zip(pred["key"], pred["label"].astype(int)))
        subjects = dict(zip(pred["key"], pred["subject"]))
        # the model that scored each session: its fold's for validation, the best
        # fold's for the test (or, frozen, the new) sessions
        groups = dict(zip(pred["key"], pred["set"].astype(str) + " fold "
                          + pred["fold"].astype(str)))
        morf = probs[probs["order"] == "MoRF"]
        base = morf[morf["scenario"] == 0].set_index("key")["prob"]
        diff = (base - pred.set_index("key")["prob"].reindex(base.index)).abs().max()
        log.info("baseline probability vs predictions.tsv: largest difference %.3g", diff)
        long = probs.rename(columns={"session": "ses", "key": "session"})
        table = auc_table(long[long["order"] == "MoRF"], labels, groups)
        aucs = inverting_intervals(long, labels, subjects, n_resamples=n_bootstrap,
                                   seed=seed)
        keep = ["scenario", "N", "auc_low", "auc_high", "lerf_auc", "random_auc",
                "random_low", "random_high", "n_random", "informative"]
        table = table.merge(control_summary(aucs)[keep], on=["scenario", "N"], how="left")
        for _, r in table[table["N"] == level].iterrows():
            log.info("scenario %2d N=%d: AUC %.3f [%.3f, %.3f] (drop %.3f); random %.3f "
                     "[%.3f, %.3f]; within models %.3f", r["scenario"], r["N"], r["auc"],
                     r["auc_low"], r["auc_high"], r["auc_drop"], r["random_auc"],
                     r["random_low"], r["random_high"], r["auc_within"])
        scen_table = scenario_table(long, labels, subjects, table, aucs, level=level,
                                    paper=choose_scenario(table, n=level), choice=choice,
                                    choice_levels=choice_levels, n_resamples=n_bootstrap,
                                    seed=seed)
        with atomic_path(table_out) as tmp:
            table.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
        with atomic_path(scenarios_out) as tmp:
            scen_table.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
        line = choice_line(scen_table, choice, choice_levels)
        log.info("%s", line)
        plot_inverting(table, figure_out,
                       title=f"Voxel inverting, {table['n_sessions'].iloc[0]} sessions\n"
                             f"{line}")


def band_of(row) -> dict:
    """The random band of a scenario's row of inverting_auc.tsv and whether its AUC falls
    below it (None where the controls did not run at that level)."""
    low, high = (float(row.get(k, np.nan)) for k in ("random_low", "random_high"))
    if not np.isfinite(low):
        return dict(random_band=None, clears_random_band=None)
    return dict(random_band=[low, high], clears_random_band=bool(row["auc"] < low))
