"""Network inputs made from a synthetic cohort's ground truth, for tuning training fast.

The workflow's preprocessing costs about 28 s per session on 2 cores. To try training
settings on larger cohorts, this script builds an approximate session cache in seconds:
qT1 and MWF are resampled into the NDI grid with the generator's true head poses, the true
brain and cerebellum masks replace skull strip and cerebellum removal, and the maps are
scaled and cropped exactly as preprocessing does (same ranges, same crop rule). The cache
and a split table land in OUT (OUT/cache/{images.npy,index.tsv}, OUT/split.tsv), ready
for ``gamer_mril.training.train_fold``. Reads the ground truth, so never part of the
workflow.

    python bench/truth_cache.py COHORT OUT [--crop 48 48 56] [--test-fraction 0.2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy.ndimage import map_coordinates

from gamer_mril import CONTRASTS
from gamer_mril.preprocessing import RANGES, apply_crop, crop_box, scale_to_unit
from gamer_mril.split import make_split, write_split
from gamer_mril.synthetic import RAW_NAMES
from gamer_mril.training import build_cache


def build_truth_cache(cohort: Path, out: Path, crop=(48, 48, 56), with_planted=False):
    """The network inputs of every session of ``cohort`` made from its ground truth, as a
    session cache in ``out/cache``; returns (the participants table, {(subject, session):
    planted-region mask in the cropped grid} when ``with_planted``)."""
    raw, gt = cohort / "rawdata", cohort / "ground_truth"
    truth = pd.read_csv(gt / "truth.tsv", sep="\t", dtype={"subject": str, "session": str})
    table = pd.read_csv(raw / "participants.tsv", sep="\t", dtype={"subject": str, "session": str})
    maps = out / "maps"
    maps.mkdir(parents=True, exist_ok=True)
    rows, planted = [], {}
    for _, r in truth.iterrows():
        s, t = r["subject"], r["session"]
        sdir = raw / f"sub-{s}" / f"ses-{t}"
        files = {c: next(sdir.rglob(f"*_{RAW_NAMES[c][1]}.nii.gz")) for c in CONTRASTS}
        ndi = nib.load(files["NDI"])
        shape = ndi.shape
        g = gt / f"sub-{s}" / f"ses-{t}"
        brain = np.asarray(nib.load(g / f"sub-{s}_ses-{t}_space-NDI_desc-brain_mask.nii.gz").dataobj) > 0
        cereb = np.asarray(nib.load(g / f"sub-{s}_ses-{t}_space-NDI_desc-cerebellum_mask.nii.gz").dataobj) > 0
        box = crop_box(brain, crop)
        if with_planted:
            region = np.asarray(nib.load(g / f"sub-{s}_ses-{t}_space-NDI_desc-planted_mask.nii.gz").dataobj) > 0.5
            planted[(s, t)] = apply_crop(region & brain & ~cereb, box)
        world = ndi.affine @ np.vstack([np.indices(shape).reshape(3, -1), np.ones((1, int(np.prod(shape))))])
        subject_xyz = np.linalg.inv(np.array(json.loads(r["pose_NDI"]))) @ world
        paths = {}
        for c in CONTRASTS:
            img = nib.load(files[c])
            data = np.asarray(img.dataobj, dtype=np.float64)
            if c != "NDI":
                vox = np.linalg.inv(img.affine) @ np.array(json.loads(r[f"pose_{c}"])) @ subject_xyz
                data = map_coordinates(data, vox[:3], order=1, mode="constant").reshape(shape)
            scaled, _ = scale_to_unit(data, *RANGES[c])
            scaled = np.where(brain & ~cereb, scaled, 0).astype(np.float32)
            paths[c] = maps / f"sub-{s}_ses-{t}_{c}.nii.gz"
            nib.save(nib.Nifti1Image(apply_crop(scaled, box), ndi.affine), paths[c])
        row = table[(table["subject"] == s) & (table["session"] == t)].iloc[0]
        rows.append(dict(subject=s, session=t, age=row["age"], edss=row["edss"], paths=paths))
    build_cache(rows, out / "cache")
    return table, planted


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cohort", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--crop", type=int, nargs=3, default=(48, 48, 56))
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    table, _ = build_truth_cache(a.cohort, a.out, tuple(a.crop))
    write_split(make_split(table, a.test_fraction, a.folds, a.seed), a.out / "split.tsv")
    print(f"{len(table)} sessions -> {a.out / 'cache'}, split -> {a.out / 'split.tsv'}")


if __name__ == "__main__":
    main()
