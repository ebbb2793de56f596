"""Do the voxelwise group tests find the planted region? For the permutation maps of a
finished run (``results/group/stats``: rule group_relevance_stats per scenario, rule
group_input_stats per input map; docs/method.md#77-group-statistics-in-mni152), per
scenario or input map and volume, with S the voxels of FWE p < 0.05 in the template
cerebrum C and R the planted region in MNI152 (the ground truth's
``space-MNI152NLin2009cAsym_res-2_desc-planted_mask`` on the tests' grid):

- ``n_significant``: |S| (``n_positive``: of them with t > 0, severe above mild);
- ``inside``: |S & R| / |S|, the share of the significant voxels in the region, and
  ``inside_tol1`` the same with R widened by one voxel of the tests' grid (26
  neighbours); ``chance`` = |R| / |C| is what significant voxels placed at random would
  give;
- ``found``: |S & R| / |R|, the share of the region that is significant.

Reads the synthetic ground truth, so it lives here and not in the workflow:

    python bench/localization_stats.py RESULTS COHORT [--alpha 0.05] [--out TABLE.tsv]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy.ndimage import binary_dilation

from localization import template_region  # bench/localization.py

from gamer_mril import CONTRASTS

COLUMNS = ["test", "scenario", "map", "n_significant", "n_positive", "inside",
           "inside_tol1", "chance", "found", "region_voxels"]
_TOUCH = np.ones((3, 3, 3), dtype=bool)


def significance_figures(pfwe, t, region, cerebrum, alpha: float = 0.05) -> dict:
    """The figures of one FWE p map (``pfwe``) and its t map against the region, all on
    one grid; ``inside`` and ``inside_tol1`` are NaN when nothing is significant."""
    region = np.asarray(region, bool) & cerebrum
    sig = (np.asarray(pfwe) < alpha) & cerebrum
    wide = binary_dilation(region, _TOUCH) & cerebrum
    n = int(sig.sum())
    return dict(n_significant=n, n_positive=int((sig & (np.asarray(t) > 0)).sum()),
                inside=float((sig & region).sum() / n) if n else float("nan"),
                inside_tol1=float((sig & wide).sum() / n) if n else float("nan"),
                chance=float(region.sum() / cerebrum.sum()),
                found=float((sig & region).sum() / region.sum()) if region.any()
                else float("nan"),
                region_voxels=int(region.sum()))


def _volumes(img) -> list:
    data = np.asarray(img.dataobj, dtype=np.float64)
    if data.ndim == 3:
        return [("combined", data)]
    return [(CONTRASTS[i], data[..., i]) for i in range(data.shape[-1])]


def stats_table(results: Path, cohort: Path, alpha: float = 0.05):
    """``(table, note)``: one row per test, scenario (or input map) and volume."""
    folder = Path(results) / "group" / "stats"
    pfwe_files = sorted(folder.glob("*_stat-pfwe_statmap.nii.gz"))
    if not pfwe_files:
        return pd.DataFrame(columns=COLUMNS), f"no permutation maps under {folder}"
    first = nib.load(str(pfwe_files[0]))
    regions = template_region(Path(results), Path(cohort), first)
    if regions is None:
        return pd.DataFrame(columns=COLUMNS), "the ground truth holds no template-space region"
    region, cerebrum = regions
    rows = []
    for path in pfwe_files:
        img = nib.load(str(path))
        if img.shape[:3] != first.shape[:3] or not np.allclose(img.affine, first.affine):
            raise ValueError(f"{path}: not on the grid of the other permutation maps")
        t_img = nib.load(str(path).replace("_stat-pfwe_", "_stat-t_"))
        scen = re.search(r"_scenario-(\d+)_", path.name)
        contrast = re.search(r"_map-([A-Za-z0-9]+)_", path.name)
        test, label = (("relevance", int(scen.group(1))) if scen
                       else ("input", contrast.group(1)))
        for (name, p), (_, t) in zip(_volumes(img), _volumes(t_img)):
            rows.append(dict(test=test, scenario=label if test == "relevance" else "",
                             map=name if test == "relevance" else label,
                             **significance_figures(p, t, region, cerebrum, alpha)))
    return pd.DataFrame(rows, columns=COLUMNS), None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="a finished run's results folder")
    ap.add_argument("cohort", type=Path, help="the synthetic cohort (with ground_truth/)")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--out", type=Path, help="also write the table as TSV")
    a = ap.parse_args(argv)
    table, note = stats_table(a.results, a.cohort, a.alpha)
    if note:
        print(f"note: {note}")
    else:
        print(f"FWE p < {a.alpha}: n = significant voxels (pos: t > 0, severe above mild); "
              f"inside = their share in the planted region (+1 voxel: widened by one "
              f"voxel; chance = the region's share of the cerebrum); found = share of the "
              f"region significant")
        print(table.round(3).to_string(index=False, na_rep="-"))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(a.out, sep="\t", index=False, float_format="%.6g", na_rep="n/a")
    return 0


if __name__ == "__main__":
    sys.exit(main())
