"""Correlation of the mean normalized value in the top-N masks with EDSS: Spearman's rho,
its permutation test, Tables III and IV (docs/method.md#75-correlation-with-edss; the rule
correlations).

Decisions (docs/method.md#8-decisions-the-paper-leaves-open):

* **Spearman / permutation test** (:func:`spearman_permutation`): rho from
  ``scipy.stats.spearmanr``; p from ``scipy.stats.permutation_test`` with
  ``permutation_type="pairings"``, ``alternative="two-sided"``, ``n_resamples`` (20,000)
  and ``rng=numpy.random.default_rng(seed)``. Only the first sample (the ranks of the
  values) is permuted, which gives the same null distribution as permuting both and lets
  scipy enumerate all ``n!`` pairings exactly when ``n! <= n_resamples`` (n <= 7 for
  20,000). scipy's definitions apply: two-sided p = ``min(1, 2 min(p_less,
  p_greater))``; a random test adds one to numerator and denominator, so ``p >= 2 /
  (n_resamples + 1)``. Pairs with a NaN are dropped. Fewer than three pairs, or a constant
  variable, give ``(nan, nan)``: no correlation is defined, and a NaN p is skipped by
  :func:`gamer_mril.statistics.bh_adjust` instead of entering the family as a fake
  ``p = 1``.
* **Multiple testing**: Benjamini-Hochberg over the finite p-values of Table IV's family
  (the three contrasts of the chosen scenario at ``assessment.heatmap_level``).
* **The chosen scenario** is the one rule voxel_inverting chose
  (``assessment.choice``; column ``chosen`` of inverting_scenarios.tsv): by default the
  largest AOPC over ``assessment.choice_levels`` among the scenarios that clear its band
  (:func:`gamer_mril.assessment.controls.choose_by_aopc`); the paper's, the largest AUC
  drop at ``assessment.heatmap_level``, is written beside it (``chosen_paper``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .. import CONTRASTS
from ..inputs import load_participants
from ..io import atomic_path, atomic_write_json, read_session_table, session_keys
from ..jobs import step
from ..settings import CHOICE_LEVELS
from ..statistics import bh_adjust, grouped_bootstrap
from .figures import plot_correlations
from .inverting import band_of

log = logging.getLogger("gamer_mril.assessment")


#: Levels of Table III and the level of Table IV / Fig. 6.
TABLE_III_LEVELS = (30, 40, 50)


def _clean_pairs(values, edss):
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    y = np.asarray(edss, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"{x.size} values but {y.size} EDSS scores")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _defined(x, y) -> bool:
    return x.size >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0


def spearman_rho(values, edss) -> float:
    """Spearman's rho (``scipy.stats.spearmanr``) over the pairs without NaN; NaN when
    fewer than three pairs or a variable is constant."""
    from scipy import stats

    x, y = _clean_pairs(values, edss)
    if not _defined(x, y):
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


def spearman_columns(values, edss) -> np.ndarray:
    """Spearman's rho of every column of ``values`` (n, p) with ``edss`` (n,), each over
    its pairs without NaN (as :func:`spearman_rho`, column by column, vectorized where a
    column is complete); NaN where undefined."""
    from scipy.stats import rankdata

    x = np.asarray(values, dtype=np.float64)
    y = np.asarray(edss, dtype=np.float64).reshape(-1)
    if x.ndim == 1:
        x = x[:, None]
    out = np.full(x.shape[1], np.nan)
    whole = np.isfinite(x).all(axis=0) & np.isfinite(y).all()
    if whole.any() and y.size >= 3 and np.ptp(y) > 0:
        rx = rankdata(x[:, whole], axis=0)
        rx -= rx.mean(axis=0)
        ry = rankdata(y)
        ry -= ry.mean()
        denom = np.sqrt((rx * rx).sum(axis=0) * float(ry @ ry))
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = (ry @ rx) / denom
        out[whole] = np.where(denom > 0, rho, np.nan)
    for j in np.flatnonzero(~whole):
        out[j] = spearman_rho(x[:, j], y)
    return out


def spearman_permutation(values, edss, n_resamples: int = 20000, seed: int = 0):
    """``(rho, p)``: Spearman's rho and its two-sided permutation p-value.

    rho: ``scipy.stats.spearmanr``. p: ``scipy.stats.permutation_test`` (pairings,
    two-sided, ``n_resamples``, ``rng=numpy.random.default_rng(seed)``) on the Spearman
    statistic; exact enumeration when ``n! <= n_resamples``. Pairs with a NaN are dropped;
    fewer than three pairs or a constant variable give ``(nan, nan)``. The same seed gives
    the same p.
    """
    from scipy import stats

    n_resamples = int(n_resamples)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, not {n_resamples}")
    x, y = _clean_pairs(values, edss)
    if not _defined(x, y):
        log.info("Spearman correlation undefined (%d pairs, constant input?): rho and p "
                 "are NaN", x.size)
        return float("nan"), float("nan")
    rho = float(stats.spearmanr(x, y).statistic)
    # Spearman's rho is Pearson's r of the (average) ranks; permuting the pairing only
    # reorders the ranks, so they are computed once and centred once.
    rx = stats.rankdata(x)
    ry = stats.rankdata(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))

    def statistic(a, axis=-1):
        return np.moveaxis(a, axis, -1) @ ry / denom

    res = stats.permutation_test((rx,), statistic, permutation_type="pairings",
                                 vectorized=True, n_resamples=n_resamples,
                                 alternative="two-sided", batch=5000,
                                 rng=np.random.default_rng(seed))
    return rho, float(res.pvalue)


def correlation_table(means: pd.DataFrame, edss, scenario: int, *,
                      n: int, table_iii_levels: Sequence = TABLE_III_LEVELS,
                      contrasts: Sequence[str] = CONTRASTS, n_resamples: int = 20000,
                      seed: int = 0, subjects: Mapping | None = None,
                      n_bootstrap: int = 2000) -> pd.DataFrame:
    """Spearman correlations with EDSS for Tables III and IV.

    ``means``: tidy frame, one row per session, scenario, level and contrast, columns
    ``session``, ``scenario``, ``N``, ``contrast``, ``value`` (the mean normalized value
    in the session's top-N mask, :func:`mean_in_mask`; NaN for an empty mask).
    ``edss``: ``{session: EDSS}`` (a dict or a Series indexed by session); every session of
    ``means`` must have one. ``scenario``: the chosen scenario (:func:`choose_scenario`).

    Returns one row per scenario (every scenario in ``means``), level (``table_iii_levels``
    and ``n``, those present) and contrast, with ``n_sessions`` (pairs used), ``rho``,
    ``p`` and ``p_bh`` and the flags ``table_iii`` (level in ``table_iii_levels``) and
    ``table_iv`` (the chosen scenario at level ``n``). ``p`` (permutation test) is
    computed for the Table IV rows only, and ``p_bh`` adjusts them as one family (the
    contrasts); NaN elsewhere. With ``subjects`` ({session: subject}) every rho gets a
    subject-grouped bootstrap 95% interval (``rho_low``, ``rho_high``; ``n_bootstrap``
    resamples seeded with ``seed``). Use :func:`table_iii` and :func:`table_iv` for wide
    forms.
    """
    need = {"session", "scenario", "N", "contrast", "value"}
    if not need <= set(means.columns):
        raise ValueError(f"means needs the columns {sorted(need)}, has {list(means.columns)}")
    edss = pd.Series(edss, dtype=np.float64) if not isinstance(edss, pd.Series) else \
        edss.astype(np.float64)
    missing = set(means["session"]) - set(edss.index)
    if missing:
        raise ValueError(f"no EDSS for sessions {sorted(map(str, missing))[:5]}")
    if not (means["scenario"] == scenario).any() or \
            not ((means["scenario"] == scenario) & (means["N"] == n)).any():
        raise ValueError(f"means has no rows for scenario {scenario} at N = {n}")
    wanted_levels = sorted(set(table_iii_levels) | {n})
    rows = []
    for scn in sorted(means["scenario"].unique()):
        for level in wanted_levels:
            for contrast in contrasts:
                sub = means[(means["scenario"] == scn) & (means["N"] == level)
                            & (means["contrast"] == contrast)]
                if sub.empty:
                    continue
                if sub["session"].duplicated().any():
                    raise ValueError(f"scenario {scn}, N = {level}, {contrast}: a session "
                                     f"appears twice")
                x = sub["value"].to_numpy(np.float64)
                y = edss.loc[sub["session"]].to_numpy(np.float64)
                in_iv = bool(scn == scenario and level == n)
                if in_iv:
                    rho, p = spearman_permutation(x, y, n_resamples=n_resamples, seed=seed)
                else:
                    rho, p = spearman_rho(x, y), float("nan")
                rows.append(dict(scenario=int(scn), N=int(level), contrast=contrast,
                                 n_sessions=int((np.isfinite(x) & np.isfinite(y)).sum()),
                                 rho=rho, p=p, p_bh=float("nan"),
                                 table_iii=level in table_iii_levels, table_iv=in_iv))
    df = pd.DataFrame(rows, columns=["scenario", "N", "contrast", "n_sessions", "rho", "p",
                                     "p_bh", "table_iii", "table_iv"])
    iv = df["table_iv"].to_numpy(bool)
    df.loc[iv, "p_bh"] = bh_adjust(df.loc[iv, "p"].to_numpy(np.float64))
    if subjects is not None:
        low, high = _rho_intervals(means, edss, subjects, df, n_bootstrap, seed)
        df.insert(df.columns.get_loc("rho") + 1, "rho_low", low)
        df.insert(df.columns.get_loc("rho_low") + 1, "rho_high", high)
    return df


def _rho_intervals(means, edss, subjects, df, n_bootstrap, seed):
    """Subject-grouped bootstrap intervals of the rho of every row of ``df``."""

    keys = list(zip(df["scenario"], df["N"], df["contrast"]))
    wide = means.pivot_table(index="session", columns=["scenario", "N", "contrast"],
                             values="value", aggfunc="first", dropna=False)
    sessions = list(wide.index)
    names = [f"c{j}" for j in range(len(keys))]
    frame = pd.DataFrame({c: wide[k].to_numpy(np.float64) if k in wide else np.nan
                          for c, k in zip(names, keys)})
    frame["edss"] = edss.loc[sessions].to_numpy(np.float64)
    frame["subject"] = [str(subjects[s]) for s in sessions]

    def statistic(a):
        return dict(zip(names, spearman_columns(np.column_stack([a[c] for c in names]),
                                                a["edss"])))

    ci = grouped_bootstrap(frame, statistic, n_resamples=n_bootstrap, seed=seed,
                           columns=names + ["edss"])
    return [ci[c][0] for c in names], [ci[c][1] for c in names]


def table_iii(corr: pd.DataFrame) -> pd.DataFrame:
    """Wide Table III: rows (scenario, N), one rho column per contrast (and, with
    intervals, ``<contrast>_low`` and ``<contrast>_high`` after them)."""
    sub = corr[corr["table_iii"]]
    order = list(dict.fromkeys(sub["contrast"]))
    table = sub.pivot(index=["scenario", "N"], columns="contrast", values="rho")[order]
    if "rho_low" in sub:
        for end in ("low", "high"):
            wide = sub.pivot(index=["scenario", "N"], columns="contrast", values=f"rho_{end}")
            for c in order:
                table[f"{c}_{end}"] = wide[c]
    return table


def table_iv(corr: pd.DataFrame) -> pd.DataFrame:
    """Wide Table IV: rows rho (with rho_low, rho_high when there are intervals), p,
    p_bh; one column per contrast."""
    sub = corr[corr["table_iv"]].set_index("contrast")
    rows = ["rho", "rho_low", "rho_high", "p", "p_bh"] if "rho_low" in sub else \
        ["rho", "p", "p_bh"]
    return sub[rows].T


def _finite(v):
    v = float(v)
    return v if np.isfinite(v) else None


def _flag(v):
    """A TSV's true/false/n/a cell as True, False or None."""
    if isinstance(v, str):
        return {"true": True, "false": False}.get(v.lower())
    return None if pd.isna(v) else bool(v)


def chosen_record(scenarios: pd.DataFrame, path="inverting_scenarios.tsv") -> dict:
    """chosen_scenario.json's figures, from inverting_scenarios.tsv (rule
    voxel_inverting's choice, ``chosen``, and the paper's, ``chosen_paper``): the
    scenario, its AOPC with band and verdict, which scenarios clear their bands, the
    paper's choice and the figures at the level of Table IV."""
    at = scenarios.set_index("scenario")
    picked = {}
    for col in ("chosen", "chosen_paper"):
        rows = at.index[at[col].map(_flag).eq(True)] if col in at else []
        if len(rows) != 1:
            raise ValueError(f"{path}: {len(rows)} scenarios flagged {col}, expected one "
                             f"(a table of rule voxel_inverting?)")
        picked[col] = int(rows[0])
    chosen, paper = picked["chosen"], picked["chosen_paper"]
    c = at.loc[chosen]
    clearing = [int(k) for k, v in at["clears_band"].items() if _flag(v)]
    band = None if _finite(c["aopc_high"]) is None else [float(c["aopc_low"]),
                                                         float(c["aopc_high"])]
    return dict(
        scenario=chosen, level=int(c["N"]), aopc=_finite(c["aopc"]), aopc_band=band,
        clears_band=_flag(c["clears_band"]), lerf_aopc=_finite(c["lerf_aopc"]),
        scenarios_clearing_band=clearing, none_cleared=not clearing,
        aopc_by_scenario={int(k): _finite(v) for k, v in at["aopc"].items()},
        paper_scenario=paper,
        baseline_auc=float(c["baseline_auc"]), auc=float(c["auc"]),
        auc_drop=float(c["auc_drop"]),
        auc_drop_by_scenario={int(k): _finite(d) for k, d in at["auc_drop"].items()},
        **band_of(c))


def run_correlations(value_paths: Sequence, inverting_scenarios, participants, *,
                     chosen_out, long_out, table_iii_out, table_iv_out, figure_out,
                     n_permutations: int, seed: int, heatmap_level: int,
                     choice: str = "aopc", choice_levels: Sequence = CHOICE_LEVELS,
                     n_bootstrap: int = 2000, log_file=None, threads: int = 1) -> None:
    """Rule correlations: the scenario rule voxel_inverting chose
    (``inverting_scenarios``, column ``chosen``) into ``chosen_out`` with the paper's
    beside it; Spearman correlation of the mean normalized value in its top-N masks
    (N = ``heatmap_level``) with EDSS (Tables III, IV). ``choice``, ``choice_levels``:
    the settings voxel_inverting chose by, for the record. ``value_paths``: every
    session's mask-values table."""
    level = int(heatmap_level)
    choice_levels = [int(n) for n in choice_levels]

    inputs = {"values": list(value_paths), "inverting": inverting_scenarios,
              "participants": participants}
    with step("correlations", inputs=inputs,
              params={"n_permutations": n_permutations, "seed": seed,
                      "n_bootstrap": n_bootstrap, "heatmap_level": level,
                      "choice": str(choice), "choice_levels": choice_levels},
              outputs=[chosen_out, long_out, table_iii_out, table_iv_out, figure_out],
              log_file=log_file, threads=threads) as s:
        record = chosen_record(pd.read_csv(inverting_scenarios, sep="\t"),
                               inverting_scenarios)
        chosen = record["scenario"]
        if record["level"] != level:
            raise ValueError(f"{inverting_scenarios} gives the figures at N = "
                             f"{record['level']}, not heatmap_level {level}: rerun rule "
                             f"voxel_inverting")
        log.info("chosen scenario %d (AOPC %s, clears its band: %s); the paper's rule: "
                 "scenario %d", chosen, record["aopc"], record["clears_band"],
                 record["paper_scenario"])
        means = pd.concat([read_session_table(f) for f in value_paths],
                          ignore_index=True)
        means["session"] = session_keys(means)
        table = load_participants(participants)
        edss = pd.Series(table["edss"].to_numpy(float),
                         index=table["subject"] + "\t" + table["session"])
        subjects = dict(zip(table["subject"] + "\t" + table["session"], table["subject"]))
        corr = correlation_table(means, edss, chosen, n=level,
                                 n_resamples=n_permutations, seed=seed, subjects=subjects,
                                 n_bootstrap=n_bootstrap)
        with atomic_path(long_out) as tmp:
            corr.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
        t3 = table_iii(corr).reset_index()
        t3.insert(0, "chosen", t3["scenario"] == chosen)
        with atomic_path(table_iii_out) as tmp:
            t3.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
        t4 = table_iv(corr)
        t4.index.name = "statistic"
        with atomic_path(table_iv_out) as tmp:
            t4.reset_index().to_csv(tmp, sep="\t", index=False, na_rep="n/a")
        iv = corr[corr["table_iv"]].set_index("contrast")
        atomic_write_json(chosen_out, dict(
            **record, choice=str(choice), choice_levels=choice_levels,
            rule=_rule(record, choice, choice_levels, level),
            n_permutations=int(n_permutations),
            seed=int(seed), provenance=s.provenance()))
        sub = means[(means["scenario"] == chosen) & (means["N"] == level)]
        wide = sub.pivot(index="session", columns="contrast", values="value")
        values = {c: wide[c].to_numpy(float) for c in CONTRASTS if c in wide}
        plot_correlations(values, edss.loc[wide.index].to_numpy(float), figure_out,
                          stats={c: (iv.loc[c, "rho"], iv.loc[c, "p"]) for c in values},
                          title=f"Scenario {chosen}, top-{level} mask: mean "
                                f"normalized value vs EDSS")


def _rule(record: Mapping, choice: str, choice_levels: Sequence, level: int) -> str:
    """chosen_scenario.json's ``rule``: how its scenario was chosen."""
    at = "N = " + ", ".join(str(int(n)) for n in choice_levels)
    paper = (f"largest AUC drop (baseline AUC - AUC after inverting) at N = {level}; "
             "ties to the lowest scenario")
    if choice == "paper":
        return f"the paper's: {paper}"
    if record["none_cleared"]:
        return (f"largest AOPC over {at}: no scenario's AOPC clears its random band, so "
                f"the largest anyway; ties to the lowest scenario (the paper's rule, "
                f"{paper}: scenario {record['paper_scenario']})")
    return (f"largest AOPC over {at} among the scenarios whose AOPC clears its random "
            f"band; ties to the lowest scenario (the paper's rule, {paper}: scenario "
            f"{record['paper_scenario']})")
