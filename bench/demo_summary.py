"""The findings of a finished run as Markdown tables (for the README or a lab notebook).

Reads only the workflow's own group outputs (``results/group``): Table II, the attention
weights, the voxel-inverting AUCs at one N (Fig. 4 in numbers), the chosen scenario,
Table IV and the top peaks of the chosen scenario's severe-group heatmap. It does not read
any ground truth.

    python bench/demo_summary.py RESULTS [--level 40] [--peaks 5]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown(df: pd.DataFrame, digits: int = 2) -> str:
    """A DataFrame as a Markdown table, floats rounded."""
    lines = [_row(df.columns), _row(["---"] * len(df.columns))]
    for values in df.itertuples(index=False):
        lines.append(_row(f"{v:.{digits}f}" if isinstance(v, float) else v for v in values))
    return "\n".join(lines)


def summary(results: Path, level: int = 40, n_peaks: int = 5) -> str:
    group = Path(results) / "group"
    parts = []
    table_ii = pd.read_csv(group / "table_ii.tsv", sep="\t")
    parts += ["Table II (AUC, accuracy, specificity, sensitivity; n sessions):", "",
              markdown(table_ii)]
    att = pd.read_csv(group / "attention_weights.tsv", sep="\t")
    parts += ["", "Mean attention weights over correctly classified sessions:", "",
              markdown(att)]
    inv = pd.read_csv(group / "inverting_auc.tsv", sep="\t")
    cols = [c for c in ("scenario", "auc", "auc_low", "auc_high", "baseline_auc", "auc_drop",
                        "lerf_auc", "random_auc", "random_low", "random_high", "informative")
            if c in inv]
    at = inv[inv["N"] == level][cols]
    parts += ["", f"Voxel inverting at N = {level} (AUC after inverting each scenario's "
              f"top-{level} mask, its bootstrap interval, the LeRF and random controls):",
              "", markdown(at.sort_values("scenario"))]
    scen = group / "inverting_scenarios.tsv"
    if scen.exists():
        sc = pd.read_csv(scen, sep="\t")
        cols = [c for c in ("scenario", "chosen", "chosen_paper", "informative", "aopc",
                            "aopc_low", "aopc_high", "clears_band", "lerf_aopc", "difference",
                            "difference_low", "difference_high", "p", "p_bh") if c in sc]
        parts += ["", "Per scenario: AOPC over assessment.choice_levels with its random "
                  "band; the chosen scenario "
                  f"against each other at N = {level} (AUC difference, paired bootstrap "
                  "interval, DeLong p, BH-adjusted):", "", markdown(sc[cols], digits=3)]
    chosen = json.loads((group / "chosen_scenario.json").read_text())
    parts += ["", f"Chosen scenario: {chosen['scenario']} ({chosen['rule']})."]
    t4 = pd.read_csv(group / "table_iv.tsv", sep="\t")
    parts += ["", f"Table IV (chosen scenario, N = {chosen.get('level', level)}):", "",
              markdown(t4, digits=3)]
    peaks = pd.read_csv(group / "heatmap_peaks.tsv", sep="\t")
    top = peaks[(peaks["role"] == "chosen") & (peaks["group"] == "severe")]
    top = top.sort_values(["volume", "peak"]).groupby("volume", sort=False).head(n_peaks)
    top = top.astype({c: int for c in ("x", "y", "z")})
    cols = [c for c in ("volume", "peak", "x", "y", "z", "value", "aal3") if c in top]
    parts += ["", "Severe-group heatmap peaks of the chosen scenario (MNI mm):", "",
              markdown(top[cols])]
    return "\n".join(parts) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--level", type=int, default=40)
    ap.add_argument("--peaks", type=int, default=5, help="peaks per heatmap volume")
    args = ap.parse_args(argv)
    print(summary(args.results, args.level, args.peaks), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
