"""Controls and uncertainty of the voxel inverting experiment
(docs/method.md#74-controls-and-uncertainty-of-voxel-inverting).

A top-N mask (most relevant first, MoRF) that drops the AUC says little until it is set
beside masks of the same size that know nothing of the relevance:

* **LeRF**: the same number of voxels of the same brain region, least relevant first;
* **random**: K masks of that size drawn uniformly from the region (seeded).

Per scenario and level the MoRF AUC is compared with the random masks' mean and 95%
band; a scenario whose MoRF AUC at the level stays inside the band is *not informative*
there. The area over the perturbation curve (AOPC) sums it up per scenario: the mean,
over the levels, of the random masks' mean AUC minus the MoRF AUC (MoRF's drop minus
random's drop). Over the choice levels (``assessment.choice_levels``, small N, where a
map can beat random voxels) the AOPC has a random band of its own (each random draw's
AOPC against the other draws, :func:`aopc_table`), and the workflow's scenario is the one
of largest AOPC among those that clear it (:func:`choose_by_aopc`; the paper's choice
beside it, :func:`scenario_table`). Every pooled AUC gets a subject-grouped bootstrap
interval (:mod:`gamer_mril.statistics`), and the chosen scenario is compared with every
other at ``assessment.heatmap_level`` by DeLong's paired test (:mod:`gamer_mril.roc`),
Benjamini-Hochberg adjusted, and by the grouped bootstrap interval of the AUC
difference.

The masks are pure functions of the relevance map, the region, the top-N masks' voxel
counts and a seed, so a session's inverting table is reproducible from its inputs.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..roc import delong_test
from ..settings import CHOICES
from ..statistics import auc_columns, bh_adjust, grouped_bootstrap


def _counts(top) -> np.ndarray:
    """Voxel counts (levels, volumes) of top-N masks (levels, volumes, D, H, W)."""
    top = np.asarray(top, dtype=bool)
    return top.reshape(top.shape[:2] + (-1,)).sum(axis=-1)


def _region_indices(region, shape) -> np.ndarray:
    region = np.asarray(region, dtype=bool)
    if region.shape != tuple(shape):
        raise ValueError(f"region of shape {region.shape} does not fit maps of shape "
                         f"{tuple(shape)}")
    return np.flatnonzero(region)


def _check_counts(counts, n_region: int) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.int64)
    if (counts < 0).any() or (counts > n_region).any():
        raise ValueError(f"mask sizes must lie in 0..{n_region} (the region's voxels), "
                         f"got {counts.min()}..{counts.max()}")
    return counts


def _fill(order_idx, counts, shape) -> np.ndarray:
    """Nested masks (len(counts), *shape): the first ``counts[k]`` voxels of ``order_idx``."""
    out = np.zeros((len(counts), int(np.prod(shape))), dtype=bool)
    for k, n in enumerate(counts):
        out[k, order_idx[:int(n)]] = True
    return out.reshape((len(counts),) + tuple(shape))


def lerf_masks(relevance, region, counts) -> np.ndarray:
    """Least-relevant-first masks: for each count, the ``count`` voxels of ``region`` with
    the lowest ``relevance`` (ties by voxel index). ``relevance``: (D, H, W); returns
    bool (len(counts), D, H, W), nested."""
    relevance = np.asarray(relevance, dtype=np.float64)
    idx = _region_indices(region, relevance.shape)
    counts = _check_counts(counts, idx.size)
    order = idx[np.argsort(relevance.reshape(-1)[idx], kind="stable")]
    return _fill(order, counts, relevance.shape)


def draw_random_masks(region, counts, rng) -> np.ndarray:
    """Random masks: for each count, ``count`` voxels of ``region`` drawn uniformly
    without replacement (one permutation of the region, so the masks are nested).
    Returns bool (len(counts), D, H, W)."""
    region = np.asarray(region, dtype=bool)
    idx = _region_indices(region, region.shape)
    counts = _check_counts(counts, idx.size)
    return _fill(rng.permutation(idx), counts, region.shape)


def session_rng(seed: int, subject, session, draw: int, volume: int) -> np.random.Generator:
    """The generator of one session's random draw for one volume (contrast): the same for
    every scenario (common random numbers), different for every session, draw and
    volume."""
    key = [int(seed), zlib.crc32(str(subject).encode()), zlib.crc32(str(session).encode()),
           int(draw), int(volume)]
    return np.random.default_rng(np.random.SeedSequence(key))


def control_masks(relevance, region, top, random_masks: int, seed: int, subject, session,
                  ) -> dict:
    """The LeRF and random masks matching a scenario's top-N masks, voxel for voxel.

    ``relevance``: the scenario's map, (V, D, H, W) for individual maps (one per contrast)
    or (D, H, W) for a combined one; ``region``: the brain region of the masks (the
    cerebrum); ``top``: the top-N masks (levels, V, D, H, W), or (levels, D, H, W) for a
    combined map (one mask for every contrast). Returns ``{"LeRF": masks, "random":
    [masks of draw 0, ..., draw random_masks - 1]}``, each shaped like ``top``.
    """
    top = np.asarray(top, dtype=bool)
    relevance = np.asarray(relevance)
    shared = top.ndim == 4
    if shared:
        top, relevance = top[:, None], relevance[None]
    if top.ndim != 5 or relevance.shape != top.shape[1:]:
        raise ValueError(f"top-N masks of shape {top.shape} do not fit a relevance map of "
                         f"shape {relevance.shape}")
    counts = _counts(top)
    lerf = np.stack([lerf_masks(relevance[v], region, counts[:, v])
                     for v in range(top.shape[1])], axis=1)
    draws = []
    for d in range(int(random_masks)):
        draws.append(np.stack([
            draw_random_masks(region, counts[:, v], session_rng(seed, subject, session, d, v))
            for v in range(top.shape[1])], axis=1))
    if shared:
        lerf, draws = lerf[:, 0], [m[:, 0] for m in draws]
    return {"LeRF": lerf, "random": draws}


def inverting_intervals(probs: pd.DataFrame, labels: Mapping, subjects: Mapping,
                        n_resamples: int = 2000, seed: int = 0,
                        confidence: float = 0.95) -> pd.DataFrame:
    """Subject-grouped bootstrap intervals of every pooled inverting AUC.

    ``probs``: long frame ``session``, ``order``, ``scenario``, ``N``, ``draw``, ``prob``
    (the baseline: order MoRF, scenario 0, N 0); ``labels``: {session: 0/1};
    ``subjects``: {session: subject}. Returns one row per (order, scenario, N, draw):
    ``auc``, ``auc_low``, ``auc_high``, ``n_valid`` (resamples with both classes)."""

    keys = ["order", "scenario", "N", "draw"]
    wide = probs.pivot_table(index="session", columns=keys, values="prob", aggfunc="first")
    if wide.isna().any().any():
        raise ValueError("a session lacks some of the inverting probabilities")
    sessions = list(wide.index)
    y = np.array([int(labels[s]) for s in sessions])
    matrix = wide.to_numpy(np.float64)
    point = auc_columns(y, matrix)
    names = [f"c{j}" for j in range(matrix.shape[1])]
    frame = pd.DataFrame(matrix, columns=names)
    frame["label"] = y
    frame["subject"] = [str(subjects[s]) for s in sessions]

    def statistic(a):
        scores = np.column_stack([a[c] for c in names])
        return dict(zip(names, auc_columns(a["label"], scores)))

    ci = grouped_bootstrap(frame, statistic, n_resamples=n_resamples, seed=seed,
                           confidence=confidence, columns=names + ["label"])
    rows = []
    for j, key in enumerate(wide.columns):
        low, high, valid = ci[names[j]]
        rows.append(dict(zip(keys, key), auc=float(point[j]), auc_low=low, auc_high=high,
                         n_valid=valid))
    out = pd.DataFrame(rows)
    out["scenario"] = out["scenario"].astype(int)
    out["N"] = out["N"].astype(int)
    out["draw"] = out["draw"].astype(int)
    return out


def control_summary(aucs: pd.DataFrame, band: float = 0.95) -> pd.DataFrame:
    """Per scenario and level: the MoRF AUC with its interval, the LeRF AUC, the random
    masks' mean AUC and band (the central ``band`` share of the draws' AUCs) and whether
    MoRF falls below the band (``informative``; NaN where no control was run).

    ``aucs``: :func:`inverting_intervals`' frame."""
    lo_q, hi_q = (1 - band) / 2, 1 - (1 - band) / 2
    morf = aucs[(aucs["order"] == "MoRF") & (aucs["scenario"] > 0)]
    base = aucs[(aucs["order"] == "MoRF") & (aucs["scenario"] == 0)]
    rows = []
    for r in morf.sort_values(["scenario", "N"]).itertuples():
        at = (aucs["scenario"] == r.scenario) & (aucs["N"] == r.N)
        lerf = aucs[at & (aucs["order"] == "LeRF")]
        rnd = aucs[at & (aucs["order"] == "random")]["auc"].to_numpy(np.float64)
        rnd = rnd[np.isfinite(rnd)]
        row = dict(scenario=int(r.scenario), N=int(r.N), auc=r.auc, auc_low=r.auc_low,
                   auc_high=r.auc_high,
                   lerf_auc=float(lerf["auc"].iloc[0]) if len(lerf) else np.nan,
                   random_auc=float(rnd.mean()) if rnd.size else np.nan,
                   random_low=float(np.quantile(rnd, lo_q)) if rnd.size else np.nan,
                   random_high=float(np.quantile(rnd, hi_q)) if rnd.size else np.nan,
                   n_random=int(rnd.size))
        row["informative"] = (bool(row["auc"] < row["random_low"]) if rnd.size
                              else np.nan)
        rows.append(row)
    out = pd.DataFrame(rows)
    if len(base):
        out.insert(2, "baseline_auc", float(base["auc"].iloc[0]))
    return out


def aopc(summary: pd.DataFrame, levels=None) -> pd.Series:
    """Per scenario: the mean over ``levels`` of (random mean AUC - MoRF AUC), i.e.
    MoRF's drop minus random's (the area over the perturbation curve against random).

    ``summary``: :func:`control_summary`'s frame (or any frame with ``scenario``, ``N``,
    ``auc``, ``random_auc``, ``n_random``, one row per scenario and level). ``levels``
    None: every level with random controls; given: NaN for a scenario without a finite
    difference at every one of them (no mean over a part of the levels)."""
    with_controls = summary[summary["n_random"] > 0]
    if levels is not None:
        levels = sorted({int(n) for n in levels})
        with_controls = with_controls[with_controls["N"].isin(levels)]
    diff = with_controls["random_auc"] - with_controls["auc"]
    by = diff.groupby(with_controls["scenario"])
    out = by.mean() if levels is None else by.mean().where(by.count() == len(levels))
    return out.reindex(sorted(summary["scenario"].unique()))


def aopc_table(aucs: pd.DataFrame, levels, band: float = 0.95) -> pd.DataFrame:
    """Per scenario over ``levels`` (the choice levels): the AOPC (:func:`aopc`), its
    random band and whether it clears it, and the LeRF AOPC.

    ``aucs``: :func:`inverting_intervals`' frame. Each random draw ``d`` (nested over
    the levels, so one draw is one random "map") gets an AOPC of its own, against the
    mean of the *other* draws (leave one out, as the scenario's MoRF masks are not among
    the draws it is compared with): ``AOPC_d = mean over levels of (mean_{d' != d}
    AUC_d' - AUC_d)``. ``aopc_low`` and ``aopc_high`` are the central ``band`` share of
    the finite ``AOPC_d`` (``n_draws`` of them; NaN with fewer than two); ``clears_band``:
    ``aopc > aopc_high`` (NaN without a band). ``lerf_aopc``: the same mean for the LeRF
    masks (random mean AUC - LeRF AUC): negative when the least relevant voxels hurt
    less than random ones, as they should."""
    levels = sorted({int(n) for n in levels})
    summary = control_summary(aucs, band=band)
    out = pd.DataFrame({"aopc": aopc(summary, levels)})
    lerf = summary.assign(auc=summary["lerf_auc"])
    rnd = aucs[(aucs["order"] == "random") & aucs["N"].isin(levels)
               & (aucs["scenario"] > 0)]
    wide = rnd.pivot_table(index=["scenario", "N"], columns="draw", values="auc",
                           aggfunc="first", dropna=False)
    per_draw = {}
    for d in wide.columns:
        others = wide.drop(columns=d)
        frame = pd.DataFrame({"auc": wide[d], "random_auc": others.mean(axis=1),
                              "n_random": others.notna().sum(axis=1)}).reset_index()
        per_draw[d] = aopc(frame, levels)
    draws = pd.DataFrame(per_draw).reindex(out.index)
    lo_q, hi_q = (1 - band) / 2, 1 - (1 - band) / 2
    n_draws = draws.notna().sum(axis=1)
    out["aopc_low"] = draws.quantile(lo_q, axis=1).where(n_draws >= 2)
    out["aopc_high"] = draws.quantile(hi_q, axis=1).where(n_draws >= 2)
    clears = out["aopc"] > out["aopc_high"]
    out["clears_band"] = clears.astype(object).where(out["aopc_high"].notna() &
                                                     out["aopc"].notna())
    out["lerf_aopc"] = aopc(lerf, levels)
    out["n_draws"] = n_draws.astype(int)
    out.index.name = "scenario"
    return out


def choose_by_aopc(per_scenario: pd.DataFrame) -> tuple:
    """``(scenario, cleared)``: the scenario of largest ``aopc`` among those whose
    ``clears_band`` is true, or, when none clears its band, of largest ``aopc`` anyway
    (``cleared`` False). Ties (within 1e-12) go to the lowest number; a NaN AOPC is
    ignored; ``ValueError`` when no scenario has one. ``per_scenario``: indexed by
    scenario (:func:`aopc_table`)."""
    area = per_scenario["aopc"].to_numpy(np.float64)
    scen = per_scenario.index.to_numpy()
    ok = np.isfinite(area)
    if not ok.any():
        raise ValueError("no scenario has a defined AOPC over the choice levels (are the "
                         "controls run there?)")
    clears = ok & per_scenario["clears_band"].eq(True).to_numpy(bool)
    pool = clears if clears.any() else ok
    best = area[pool].max()
    return int(min(scen[pool][area[pool] >= best - 1e-12])), bool(clears.any())


def paired_comparisons(probs: pd.DataFrame, labels: Mapping, subjects: Mapping,
                       chosen: int, level: int, n_resamples: int = 2000,
                       seed: int = 0) -> pd.DataFrame:
    """The chosen scenario's MoRF AUC at ``level`` against every other scenario's on the
    same sessions: DeLong's paired test (p, and p adjusted by Benjamini-Hochberg over the
    comparisons) and the subject-grouped bootstrap interval of the difference
    (chosen - other)."""

    at = probs[(probs["order"] == "MoRF") & (probs["N"] == level)]
    wide = at.pivot_table(index="session", columns="scenario", values="prob",
                          aggfunc="first")
    if chosen not in wide.columns:
        raise ValueError(f"no MoRF probabilities of scenario {chosen} at N = {level}")
    sessions = list(wide.index)
    y = np.array([int(labels[s]) for s in sessions])
    others = [int(s) for s in wide.columns if int(s) != chosen]
    frame = pd.DataFrame({f"s{int(s)}": wide[s].to_numpy(np.float64) for s in wide.columns})
    frame["label"] = y
    frame["subject"] = [str(subjects[s]) for s in sessions]

    def statistic(a):
        base = auc_columns(a["label"], a[f"s{chosen}"])[0]
        diffs = base - auc_columns(a["label"], np.column_stack([a[f"s{o}"] for o in others]))
        return {f"s{o}": d for o, d in zip(others, diffs)}

    ci = grouped_bootstrap(frame, statistic, n_resamples=n_resamples, seed=seed,
                           columns=[f"s{s}" for s in [chosen] + others] + ["label"])
    rows = []
    for o in others:
        res = delong_test(y, wide[chosen].to_numpy(np.float64), wide[o].to_numpy(np.float64))
        low, high, _ = ci[f"s{o}"]
        rows.append(dict(chosen=int(chosen), scenario=o, N=int(level), auc_chosen=res.auc_a,
                         auc=res.auc_b, difference=res.difference, difference_low=low,
                         difference_high=high, z=res.z, p=res.p_value))
    out = pd.DataFrame(rows)
    out["p_bh"] = bh_adjust(out["p"].to_numpy(np.float64)) if len(out) else []
    return out


def scenario_table(probs: pd.DataFrame, labels: Mapping, subjects: Mapping,
                   table: pd.DataFrame, aucs: pd.DataFrame, *, level: int, paper: int,
                   choice: str, choice_levels, n_resamples: int = 2000,
                   seed: int = 0) -> pd.DataFrame:
    """inverting_scenarios.tsv: one row per scenario with its figures at ``level``
    (``table``: inverting_auc.tsv's rows), its AOPC over ``choice_levels`` with band and
    LeRF AOPC (:func:`aopc_table`), ``chosen`` (the workflow's choice: ``choice`` aopc,
    :func:`choose_by_aopc`; paper, ``paper``), ``chosen_paper`` (``paper``, the largest
    drop at ``level``) and the paired comparisons with the chosen scenario
    (:func:`paired_comparisons`). ``probs``, ``aucs``: as for :func:`paired_comparisons`
    and :func:`aopc_table`."""
    if choice not in CHOICES:
        raise ValueError(f"choice must be one of {list(CHOICES)}, not {choice!r}")
    per = table[table["N"] == level].set_index("scenario")
    areas = aopc_table(aucs, choice_levels)
    chosen = int(paper) if choice == "paper" else choose_by_aopc(areas)[0]
    comp = paired_comparisons(probs, labels, subjects, chosen, level,
                              n_resamples=n_resamples, seed=seed).set_index("scenario")
    out = per[["N", "baseline_auc", "auc", "auc_low", "auc_high", "auc_drop", "random_low",
               "random_high", "informative"]].copy()
    out.insert(0, "chosen_paper", out.index == int(paper))
    out.insert(0, "chosen", out.index == chosen)
    out = out.join(areas).join(comp[["difference", "difference_low", "difference_high",
                                     "z", "p", "p_bh"]])
    return out.reset_index()


def choice_line(scenarios: pd.DataFrame, choice: str, choice_levels) -> str:
    """Which scenario the workflow chose, by which rule, whether its AOPC clears its
    random band, and the paper's choice beside it, in one line (Fig. 4's title, the
    log). ``scenarios``: :func:`scenario_table`'s frame."""
    s = scenarios.set_index("scenario")
    chosen, paper = int(s.index[s["chosen"]][0]), int(s.index[s["chosen_paper"]][0])
    c, level = s.loc[chosen], int(s.loc[chosen, "N"])
    at = "N = " + ", ".join(str(int(n)) for n in sorted(choice_levels))
    if np.isfinite(c["aopc_high"]):
        where = ("above" if c["aopc"] > c["aopc_high"] else
                 "below" if c["aopc"] < c["aopc_low"] else "inside")
        area = (f"AOPC {c['aopc']:.3f} over {at}, {where} its random band "
                f"[{c['aopc_low']:.3f}, {c['aopc_high']:.3f}]")
    else:
        area = f"AOPC {c['aopc']:.3f} over {at}, no random band"
    paper_rule = f"largest AUC drop at N = {level}"
    if choice == "paper":
        return f"chosen scenario {chosen} by the paper's rule ({paper_rule}); {area}"
    none = "" if s["clears_band"].eq(True).any() else " (no scenario clears its band)"
    return (f"chosen scenario {chosen} by the largest AOPC{none}: {area}; "
            f"the paper's rule ({paper_rule}): scenario {paper}")
