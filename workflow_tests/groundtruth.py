"""Compare a workflow run with a synthetic cohort's ground truth (tests and benchmarks
only; the workflow never reads the ground truth)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from gamer_mril.preprocessing import dice
from gamer_mril.spaces import CropBox, uncrop
from gamer_mril.registration import read_affine_xfm


def _mask(path):
    return np.asarray(nib.load(str(path)).dataobj) > 0


def session_figures(results, truth, subject, session) -> dict:
    """Ground-truth figures of one preprocessed session."""
    results, truth = Path(results), Path(truth)
    anat = results / f"sub-{subject}" / f"ses-{session}" / "anat"
    tdir = truth / f"sub-{subject}" / f"ses-{session}"
    pre = f"sub-{subject}_ses-{session}"
    row = pd.read_csv(truth / "truth.tsv", sep="\t", dtype={"subject": str, "session": str})
    row = row[(row.subject == subject) & (row.session == session)].iloc[0]
    poses = {c: np.array(json.loads(row[f"pose_{c}"])) for c in ("qT1", "MWF", "NDI")}

    ndi_img = nib.load(str(anat / f"{pre}_space-NDI_desc-brain_mask.nii.gz"))
    true_brain = _mask(tdir / f"{pre}_space-NDI_desc-brain_mask.nii.gz")
    out = {"subject": subject, "session": session}
    # Co-registration: mean displacement between estimated and true NDI -> contrast
    # point mappings, over the true brain in the NDI grid.
    vox = np.argwhere(true_brain).T
    pts = ndi_img.affine[:3, :3] @ vox + ndi_img.affine[:3, 3:4]
    pts_h = np.vstack([pts, np.ones(pts.shape[1])])
    for c, suffix in (("qT1", "T1map"), ("MWF", "MWFmap")):
        est = read_affine_xfm(anat / f"{pre}_from-{suffix}_to-NDI_mode-image_xfm.mat")
        true = poses[c] @ np.linalg.inv(poses["NDI"])  # NDI scanner -> contrast scanner
        err = np.linalg.norm((est @ pts_h - true @ pts_h)[:3], axis=0)
        out[f"coreg_error_mm_{c}"] = float(err.mean())
    out["ndi_voxel_mm"] = float(np.abs(ndi_img.affine[:3, :3]).max())
    # Brain mask
    out["brain_dice"] = dice(_mask(anat / f"{pre}_space-NDI_desc-brain_mask.nii.gz"), true_brain)
    # Cerebellum removal, in the full NDI grid
    box_doc = json.loads((anat / f"{pre}_from-NDI_to-NDIcrop_mode-image_xfm.json").read_text())
    box = CropBox.from_dict(box_doc["CropBox"])
    full = tuple(box_doc["FullShape"])
    cereb = uncrop(_mask(anat / f"{pre}_space-NDIcrop_desc-cerebellum_mask.nii.gz"), box, full)
    kept = uncrop(_mask(anat / f"{pre}_space-NDIcrop_desc-cerebrum_mask.nii.gz"), box, full)
    true_cereb = _mask(tdir / f"{pre}_space-NDI_desc-cerebellum_mask.nii.gz") & true_brain
    true_cerebrum = true_brain & ~true_cereb
    out["cerebellum_removed"] = float((~kept[true_cereb]).mean())
    out["cerebrum_removed_by_cerebellum_mask"] = float(cereb[true_cerebrum].mean())
    # Template registration quality
    side = json.loads((anat / f"{pre}_space-MNI152NLin2009cAsym_desc-brain_mask.json").read_text())
    out["template_brain_dice"] = side["Facts"]["DiceWithTemplateBrainMask"]
    return out


def cohort_figures(results, cohort) -> pd.DataFrame:
    table = pd.read_csv(Path(cohort) / "rawdata" / "participants.tsv", sep="\t",
                        dtype={"subject": str, "session": str})
    return pd.DataFrame([session_figures(results, Path(cohort) / "ground_truth", s, t)
                         for s, t in zip(table.subject, table.session)])
