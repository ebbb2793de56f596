"""How well each relevance scenario finds the planted region (the synthetic cohort's
planted region as ground truth).

For every severe session of a finished run on a synthetic cohort, the top-N quantile mask
of each scenario (docs/method.md#72-quantile-masks: within the cerebrum, positive
relevance) is compared with the generator's planted region carried into the cropped grid
through the session's crop box. Printed per scenario: the mean fraction of the planted
region the mask covers (recall), and what a random mask of the same size would cover on
average (the mask's share of the cerebrum), and their ratio (enrichment). Individual maps
give one mask per contrast: the figure is the mean over contrasts, and the best contrast
is also printed.

A second table, per map (contrast, or combined): the relevance mass accuracy (the share of
the positive relevance within the cerebrum that falls in the planted region, as in
Arras et al., "CLEVR-XAI", 2022) divided by the region's share of the cerebrum; 1 is what
a map with no spatial preference gets. Top-N masks count voxels, this weighs them by
relevance, so a map whose relevance inside the region is strong but sparse shows here.

Reads the synthetic ground truth, so it lives here and not in the workflow:

    python bench/lrp_groundtruth.py RESULTS COHORT [--level 40] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from gamer_mril import CONTRASTS
from gamer_mril.assessment.masks import quantile_mask
from gamer_mril.lrp import SCENARIOS
from gamer_mril.layout import Session
from gamer_mril.spaces import CropBox, apply_crop
from gamer_mril.scenario_stack import load_stack


def _load(path):
    return np.asarray(nib.load(str(path)).dataobj)


def session_rows(results: Path, cohort: Path, subject: str, session: str, level: int):
    anat = results / f"sub-{subject}" / f"ses-{session}" / "anat"
    xai = results / f"sub-{subject}" / f"ses-{session}" / "xai"
    pre = f"sub-{subject}_ses-{session}"
    box = CropBox.from_dict(json.loads(
        (anat / f"{pre}_from-NDI_to-NDIcrop_mode-image_xfm.json").read_text())["CropBox"])
    planted = apply_crop(_load(cohort / "ground_truth" / f"sub-{subject}" / f"ses-{session}"
                               / f"{pre}_space-NDI_desc-planted_mask.nii.gz") > 0, box)
    cerebrum = _load(anat / f"{pre}_space-NDIcrop_desc-cerebrum_mask.nii.gz") > 0
    planted &= cerebrum
    if not planted.any():
        return []
    rows = []
    path = Path(Session(results, subject, session).relmaps("NDIcrop"))
    relevance = load_stack(path, dtype=np.float64)[0] if path.exists() else {}
    for n, sc in SCENARIOS.items():
        if n not in relevance:
            continue
        rel = relevance[n]
        maps = [rel[..., i] for i in range(rel.shape[-1])] if rel.ndim == 4 else [rel]
        labels = list(CONTRASTS) if rel.ndim == 4 else ["combined"]
        for label, m in zip(labels, maps):
            mask = quantile_mask(m, cerebrum, level)
            positive = np.clip(m, 0, None) * cerebrum
            mass = positive[planted].sum() / positive.sum() if positive.any() else np.nan
            rows.append(dict(subject=subject, session=session, scenario=n, name=sc.name,
                             map=label, recall=(mask & planted).sum() / planted.sum(),
                             chance=mask.sum() / cerebrum.sum(), mass=mass,
                             share=planted.sum() / cerebrum.sum()))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("cohort", type=Path)
    ap.add_argument("--level", type=int, default=40, help="top-N quantile mask (default 40)")
    ap.add_argument("--json", type=Path, help="also write the table as JSON")
    a = ap.parse_args(argv)
    pred = pd.read_csv(a.results / "group" / "predictions.tsv", sep="\t",
                       dtype={"subject": str, "session": str})
    severe = pred[pred["label"] == 1]
    rows = []
    for _, r in severe.iterrows():
        rows += session_rows(a.results, a.cohort, r["subject"], r["session"], a.level)
    df = pd.DataFrame(rows)
    if df.empty:
        print("no severe session with a planted region and relevance maps")
        return 1
    df["enrichment"] = df["recall"] / df["chance"]
    per_map = df.groupby(["scenario", "name", "map"])[["recall", "chance", "enrichment"]].mean()
    table = per_map.groupby(level=["scenario", "name"]).agg(
        recall=("recall", "mean"), chance=("chance", "mean"), enrichment=("enrichment", "mean"),
        best_map_recall=("recall", "max"))
    print(f"top-{a.level} masks of {severe.shape[0]} severe sessions vs the planted region "
          f"(recall: share of the region covered; chance: a random mask of the same size)")
    print(table.round(3).to_string())
    df["mass_enrichment"] = df["mass"] / df["share"]
    mass = (df.groupby(["scenario", "map"])["mass_enrichment"].mean().unstack("map")
            .reindex(columns=[*CONTRASTS, "combined"]))
    print(f"\nrelevance mass in the planted region / the region's share of the cerebrum "
          f"(mean over the severe sessions; 1 = no spatial preference)")
    print(mass.round(2).to_string(na_rep="-"))
    if a.json:
        a.json.write_text(json.dumps({
            "top_masks": json.loads(table.reset_index().to_json(orient="records")),
            "relevance_mass": json.loads(mass.reset_index().to_json(orient="records"))},
            indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
