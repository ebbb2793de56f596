"""Network inputs made from a synthetic cohort's ground truth, for tuning training fast.

The workflow's preprocessing costs about 28 s per session on 2 cores. To try training
settings on larger cohorts, this script builds an approximate session cache in seconds:
qT1 and MWF are resampled into the NDI grid with the generator's true head poses, the true
brain and cerebellum masks replace skull strip and cerebellum removal, and the maps are
scaled and cropped exactly as preprocessing does (same ranges, same crop rule); with
``--space aligned`` every map is carried instead into a grid fixed to the head (the pose
undone, as the workflow's native-space inputs never are). The cache
and a split table land in OUT (OUT/cache/{images.npy,index.tsv}, OUT/split.tsv), ready
for ``gamer_mril.training.train_fold``. Reads the ground truth, so never part of the
workflow.

    python bench/truth_cache.py COHORT OUT [--crop 48 48 56] [--test-fraction 0.2] \
        [--space native|aligned]
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
from gamer_mril.preprocessing import RANGES, scale_to_unit
from gamer_mril.spaces import apply_crop, crop_box
from gamer_mril.split import make_split, write_split
from gamer_mril.synthetic import RAW_NAMES
from gamer_mril.training import build_cache


#: Grids the network inputs can be made in: the NDI map's own (as the workflow does), or
#: one fixed to the head (the generator's subject space, reached through the true poses).
SPACES = ("native", "aligned")


def truth_dir(cohort: Path, space: str = "native") -> Path:
    """Where the benchmarks keep ``cohort``'s truth inputs made in ``space``."""
    return cohort / ("truth" if space == "native" else f"truth-{space}")


def build_truth_cache(cohort: Path, out: Path, crop=(48, 48, 56), with_planted=False,
                      space="native"):
    """The network inputs of every session of ``cohort`` made from its ground truth, as a
    session cache in ``out/cache``; returns (the participants table, {(subject, session):
    planted-region mask in the cropped grid} when ``with_planted``).

    ``space="native"``: in each session's NDI grid, as preprocessing makes them (the head
    in whatever pose it had in the scanner). ``space="aligned"``: in a grid of the NDI
    map's voxel size and matrix fixed to the head (the generator's subject space, centred
    on the head), every map and mask carried there through its true pose: what a perfect
    rigid registration would give. It undoes the pose only, not the head's size or
    anatomy, so a region still moves by a few mm between subjects."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
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
        pose = {c: np.array(json.loads(r[f"pose_{c}"])) for c in CONTRASTS}
        if space == "native":
            grid = ndi.affine
            to_subject = np.linalg.inv(pose["NDI"]) @ grid
        else:
            size = np.sqrt((ndi.affine[:3, :3] ** 2).sum(axis=0))
            grid = np.diag([*size, 1.0])
            grid[:3, 3] = -size * (np.array(shape) - 1) / 2
            to_subject = grid
        ijk = np.vstack([np.indices(shape).reshape(3, -1), np.ones((1, int(np.prod(shape))))])

        def resample(img, c, order):
            """``img`` (in contrast ``c``'s scanner pose) in the output grid."""
            data = np.asarray(img.dataobj, dtype=np.float64)
            vox = np.linalg.inv(img.affine) @ pose[c] @ to_subject
            if np.allclose(vox, np.eye(4)):
                return data                      # already there: the NDI grid, native
            return map_coordinates(data, (vox @ ijk)[:3], order=order,
                                   mode="constant").reshape(shape)

        g = gt / f"sub-{s}" / f"ses-{t}"

        def mask(name):
            return resample(nib.load(g / f"sub-{s}_ses-{t}_space-NDI_desc-{name}_mask.nii.gz"),
                            "NDI", 0) > 0.5
        brain, cereb = mask("brain"), mask("cerebellum")
        box = crop_box(brain, crop)
        if with_planted:
            planted[(s, t)] = apply_crop(mask("planted") & brain & ~cereb, box)
        paths = {}
        for c in CONTRASTS:
            scaled, _ = scale_to_unit(resample(nib.load(files[c]), c, 1), *RANGES[c])
            scaled = np.where(brain & ~cereb, scaled, 0).astype(np.float32)
            paths[c] = maps / f"sub-{s}_ses-{t}_{c}.nii.gz"
            nib.save(nib.Nifti1Image(apply_crop(scaled, box), grid), paths[c])
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
    ap.add_argument("--space", choices=SPACES, default="native")
    a = ap.parse_args(argv)
    table, _ = build_truth_cache(a.cohort, a.out, tuple(a.crop), space=a.space)
    write_split(make_split(table, a.test_fraction, a.folds, a.seed), a.out / "split.tsv")
    print(f"{len(table)} sessions -> {a.out / 'cache'}, split -> {a.out / 'split.tsv'}")


if __name__ == "__main__":
    main()
