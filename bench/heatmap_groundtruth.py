"""Do the group heatmaps point at the planted region? (the synthetic cohort's planted
region as ground truth)

For each scenario's MNI152 group heatmaps (``results/group/heatmaps``: the fraction of a
group's sessions whose top-N mask covers each voxel; for the individual scenarios, whose
heatmaps have one volume per contrast, each volume and their mean) this prints, for the
severe group:
where the peak is and whether it lies in the generator's planted region (or within 4 mm of
it), the mean heatmap value inside the planted region against the mean over the rest of
the cerebral white matter, and the share of the heatmap's 1,000 hottest voxels that fall
in the planted region against the region's share of the brain (chance). The scenario the
workflow chose (``chosen_scenario.json``) is marked. Reads the synthetic ground truth, so
it lives here and not in the workflow:

    python bench/heatmap_groundtruth.py RESULTS COHORT [--group severe] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import binary_dilation

from gamer_mril import CONTRASTS, templates


def resample_like(img, ref):
    """Nearest-neighbour resampling of a mask onto ``ref``'s grid (both in MNI mm)."""
    from scipy.ndimage import map_coordinates

    shape = ref.shape[:3]
    ijk = np.indices(shape).reshape(3, -1)
    xyz = ref.affine[:3, :3] @ ijk + ref.affine[:3, 3:4]
    inv = np.linalg.inv(img.affine)
    src = inv[:3, :3] @ xyz + inv[:3, 3:4]
    out = map_coordinates(np.asarray(img.dataobj, dtype=np.float32), src, order=0, cval=0)
    return out.reshape(shape) > 0.5


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("cohort", type=Path)
    ap.add_argument("--group", default="severe")
    ap.add_argument("--top", type=int, default=1000)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    group = a.results / "group"
    files = sorted((group / "heatmaps").glob(f"*_group-{a.group}_*heatmap.nii.gz"))
    if not files:
        sys.exit(f"no {a.group} heatmaps under {group / 'heatmaps'}")
    chosen = json.loads((group / "chosen_scenario.json").read_text()).get("scenario")
    planted_file = next((a.cohort / "ground_truth").glob("space-*_desc-planted_mask.nii.gz"))
    ref = nib.load(files[0])
    planted = resample_like(nib.load(planted_file), ref)
    near = binary_dilation(planted, iterations=2)   # 2 voxels = 4 mm at 2 mm
    res = int(round(abs(ref.affine[0, 0])))
    brain = np.asarray(templates.template_brain_mask(res).dataobj) > 0
    wm = np.asarray(templates.template_tissue("WM", res).dataobj) > 0.5
    if brain.shape != ref.shape[:3]:
        sys.exit(f"heatmap grid {ref.shape} is not the MNI152 {res} mm grid {brain.shape}")
    chance = planted.sum() / brain.sum()
    rows = []
    print(f"{a.group} heatmaps vs the planted region ({planted.sum()} voxels, "
          f"{100 * chance:.1f}% of the brain)")
    print(f"{'scen':>4} {'map':>8} {'peak MNI mm':>18} {'peak':>5} {'in/near':>8} "
          f"{'plateau in':>10} {'mean in':>8} {'mean WM out':>11} {'top-k in':>8} "
          f"{'x chance':>8}")
    volumes = []
    for f in files:
        n = int(re.search(r"scenario-(\d+)", f.name).group(1))
        h = np.asarray(nib.load(f).dataobj, dtype=np.float64)
        if h.ndim == 4:  # individual maps: one heatmap per contrast, and their mean
            volumes += [(n, c, h[..., i]) for i, c in enumerate(CONTRASTS)]
            volumes.append((n, "mean", h.mean(axis=3)))
        else:
            volumes.append((n, "combined", h))
    for n, label, h in volumes:
        peak = np.unravel_index(int(np.argmax(h)), h.shape)
        plateau = h >= h.max() - 1e-9          # every voxel at the maximum, not just one
        xyz = ref.affine[:3, :3] @ np.array(peak) + ref.affine[:3, 3]
        top = np.argsort(h[brain])[::-1][: a.top]
        top_in = planted[brain][top].mean()
        row = dict(scenario=n, map=label, chosen=n == chosen,
                   peak_mni=[round(float(v), 1) for v in xyz],
                   peak_value=float(h.max()), peak_in_region=bool(planted[peak]),
                   peak_near_region=bool(near[peak]),
                   plateau_in_region=float(planted[plateau].mean()),
                   mean_in_region=float(h[planted].mean()),
                   mean_wm_outside=float(h[wm & ~planted].mean()), top_in_region=float(top_in),
                   enrichment=float(top_in / chance))
        rows.append(row)
        flag = "in" if row["peak_in_region"] else ("near" if row["peak_near_region"] else "out")
        print(f"{n:>3}{'*' if row['chosen'] else ' '} {label:>8} {str(row['peak_mni']):>18} "
              f"{row['peak_value']:5.2f} {flag:>8} {row['plateau_in_region']:10.2f} "
              f"{row['mean_in_region']:8.3f} "
              f"{row['mean_wm_outside']:11.3f} {top_in:8.2f} {row['enrichment']:8.1f}")
    print("* the scenario the workflow chose; plateau in: share of the voxels at the peak "
          "value that lie in the region")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
