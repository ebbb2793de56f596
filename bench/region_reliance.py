"""Does the trained model rely on the planted region? (a control for the relevance maps)

For every session of a finished run on a synthetic cohort, the model that explains it
(``predictions.tsv``: its fold) is re-run on three versions of the session's network
input (the cropped, preprocessed maps):
  - as is;
  - *region normalized*: every voxel of the generator's planted region set, per contrast,
    to the median of the surrounding white matter (a 2-voxel ring around the region with
    MWF > 0.25), which removes the planted effect;
  - *control*: the same edit on the planted region shifted along the anterior-posterior
    axis to where it overlaps neither itself nor the outside of the cerebrum much;
  - *region normalized, <contrast> only*: the edit in one contrast, the others as is.
Printed: the AUC over the assessment set and the mean probability of the severe sessions
for each version. If the model uses the planted effect, normalizing the region lowers
both, and the control does not. The relevance maps can then be judged against a model
known to use the region (bench/lrp_groundtruth.py).

Reads the synthetic ground truth, so it lives here and not in the workflow:

    python bench/region_reliance.py RESULTS COHORT [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy.ndimage import binary_dilation
from sklearn.metrics import roc_auc_score

from gamer_mril import CONTRASTS
from gamer_mril.explain import load_session_images
from gamer_mril.spaces import CropBox, apply_crop

SHIFTS = (8, -8, 10, -10, 12, -12, 14, -14)


def _load(path):
    return np.asarray(nib.load(str(path)).dataobj)


def control_region(planted: np.ndarray, cerebrum: np.ndarray) -> np.ndarray:
    """The planted region moved along axis 1 (A-P in the crop grid) by the first shift
    that leaves it disjoint from itself with >= 90% of it in the cerebrum."""
    for k in SHIFTS:
        moved = np.roll(planted, k, axis=1)
        if not (moved & planted).any() and (moved & cerebrum).sum() >= 0.9 * moved.sum():
            return moved & cerebrum
    raise ValueError("no control position found")


def white_matter_medians(x: np.ndarray, planted: np.ndarray, cerebrum: np.ndarray) -> list:
    """Per contrast, the median of ``x`` (L, D, H, W) in a 2-voxel ring around ``planted``
    where MWF > 0.25 (white matter)."""
    ring = binary_dilation(planted, iterations=2) & ~planted & cerebrum & (x[1] > 0.25)
    return [float(np.median(x[i][ring])) for i in range(x.shape[0])]


def normalized(x: np.ndarray, region: np.ndarray, medians, channels=None) -> np.ndarray:
    """``x`` with ``region`` set to ``medians`` in the given channels (default all)."""
    out = x.copy()
    for i in range(x.shape[0]) if channels is None else channels:
        out[i][region] = medians[i]
    return out


def session_inputs(results: Path, cohort: Path, subject: str, session: str):
    anat = results / f"sub-{subject}" / f"ses-{session}" / "anat"
    pre = f"sub-{subject}_ses-{session}"
    x, _ = load_session_images([anat / f"{pre}_space-NDIcrop_desc-preproc_{s}.nii.gz"
                                for s in ("T1map", "MWFmap", "NDImap")])
    box = CropBox.from_dict(json.loads(
        (anat / f"{pre}_from-NDI_to-NDIcrop_mode-image_xfm.json").read_text())["CropBox"])
    planted = apply_crop(_load(cohort / "ground_truth" / f"sub-{subject}" / f"ses-{session}"
                               / f"{pre}_space-NDI_desc-planted_mask.nii.gz") > 0, box)
    cerebrum = _load(anat / f"{pre}_space-NDIcrop_desc-cerebrum_mask.nii.gz") > 0
    return x, planted & cerebrum, cerebrum


def main(argv=None) -> int:
    import torch

    from gamer_mril.training import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("cohort", type=Path)
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    a = ap.parse_args(argv)
    key = {"subject": str, "session": str}
    pred = pd.read_csv(a.results / "group" / "predictions.tsv", sep="\t", dtype=key)
    ages = pd.read_csv(a.results / "group" / "cache" / "index.tsv", sep="\t", dtype=key)
    pred = pred.merge(ages[["subject", "session", "age"]], on=["subject", "session"])
    models, rows = {}, []
    for _, r in pred.iterrows():
        x, planted, cerebrum = session_inputs(a.results, a.cohort, r["subject"], r["session"])
        fold = int(r["fold"])
        if fold not in models:
            models[fold] = load_model(a.results / "models" / f"fold-{fold}")
        versions = [x]
        if planted.any():
            wm = white_matter_medians(x, planted, cerebrum)
            versions += [normalized(x, planted, wm),
                         normalized(x, control_region(planted, cerebrum), wm)]
            versions += [normalized(x, planted, wm, [i]) for i in range(len(CONTRASTS))]
        else:
            versions += [x] * (2 + len(CONTRASTS))
        with torch.no_grad():
            p = torch.sigmoid(models[fold](torch.from_numpy(np.stack(versions)), torch.full(
                (len(versions),), float(r["age"])))).numpy()
        rows.append(dict(subject=r["subject"], session=r["session"], label=int(r["label"]),
                         as_is=p[0], region_normalized=p[1], control=p[2],
                         **{f"{c} only": p[3 + i] for i, c in enumerate(CONTRASTS)}))
    df = pd.DataFrame(rows)
    out = {}
    for col in ("as_is", "region_normalized", "control", *(f"{c} only" for c in CONTRASTS)):
        out[col] = dict(auc=float(roc_auc_score(df["label"], df[col])),
                        mean_p_severe=float(df.loc[df["label"] == 1, col].mean()))
    n_sev = int(df["label"].sum())
    print(f"{len(df)} sessions ({n_sev} severe), each through the model that explains it")
    print(f"{'input':>18}  {'AUC':>5}  {'mean p (severe)':>15}")
    for col, v in out.items():
        print(f"{col:>18}  {v['auc']:5.2f}  {v['mean_p_severe']:15.2f}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
