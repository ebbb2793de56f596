"""Compare skull-stripping methods on synthetic heads against their true brain masks.

    python bench/skullstrip.py COHORT [--sessions N]

COHORT is a folder made by gamer-mril-synth (rawdata/ + ground_truth/). For each of the
first N sessions, each method makes a brain mask on the scaled qT1 grid; the table gives
Dice with the true mask, the volume ratio and seconds (one ITK thread).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from gamer_mril import preprocessing as pp
from gamer_mril import registration
from gamer_mril.synthetic import raw_path

METHODS = {
    "deepbet on raw qT1": lambda q, a, w: pp._deepbet_mask(q, a),
    "template (MNI152 to head, SyN)": lambda q, a, w: pp.brain_mask(q, a, "template", w),
    "deepbet on pseudo-T1w": lambda q, a, w: pp.brain_mask(q, a, "deepbet", w),
    "deepbet + template (default)": lambda q, a, w: pp.brain_mask(q, a, "deepbet_template", w),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cohort", type=Path)
    p.add_argument("--sessions", type=int, default=4)
    a = p.parse_args(argv)
    registration.configure(1, 42)
    table = pd.read_csv(a.cohort / "rawdata" / "participants.tsv", sep="\t", dtype=str)
    rows = []
    for sub, ses in list(zip(table.subject, table.session))[: a.sessions]:
        img = nib.load(raw_path(a.cohort / "rawdata", sub, ses, "qT1"))
        q, _ = pp.scale_to_unit(img.get_fdata(), *pp.RANGES["qT1"])
        truth = np.asarray(nib.load(a.cohort / "ground_truth" / f"sub-{sub}" / f"ses-{ses}"
                                    / f"sub-{sub}_ses-{ses}_space-qT1_desc-brain_mask.nii.gz").dataobj) > 0
        for name, fn in METHODS.items():
            with tempfile.TemporaryDirectory(dir=a.cohort) as work:
                t0 = time.perf_counter()
                mask = fn(q, img.affine, work)
                sec = time.perf_counter() - t0
            rows.append(dict(session=f"sub-{sub} ses-{ses}", method=name, dice=pp.dice(mask, truth),
                             volume_ratio=mask.sum() / truth.sum(), seconds=sec))
    df = pd.DataFrame(rows)
    summary = df.groupby("method", sort=False).agg(
        dice_mean=("dice", "mean"), dice_min=("dice", "min"),
        volume_ratio=("volume_ratio", "mean"), seconds=("seconds", "mean"))
    print(summary.round(4).to_string())


if __name__ == "__main__":
    main()
