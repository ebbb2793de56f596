"""The preprocessing workflow on a tiny synthetic cohort, checked against ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from gamer_mril.io import sha256, sidecar_path
from gamer_mril.spaces import CropBox, apply_crop

from .conftest import make_config, run_snakemake
from .groundtruth import cohort_figures

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def preprocessed(tiny_cohort, tmp_path_factory):
    work = tmp_path_factory.mktemp("run")
    proc = run_snakemake(work, make_config(tiny_cohort / "rawdata"), "preprocess_all",
                         "dataset_description")
    assert proc.returncode == 0, proc.stderr[-5000:]
    return work


def test_ground_truth_is_recovered(preprocessed, tiny_cohort):
    fig = cohort_figures(preprocessed / "results", tiny_cohort)
    print(fig.round(4).T.to_string())
    assert len(fig) == 4
    # Co-registration recovers the planted poses: mean error below one NDI voxel.
    for c in ("qT1", "MWF"):
        assert (fig[f"coreg_error_mm_{c}"] < fig["ndi_voxel_mm"]).all()
        assert fig[f"coreg_error_mm_{c}"].mean() < fig["ndi_voxel_mm"].mean() / 2
    assert (fig["brain_dice"] >= 0.95).all()
    assert (fig["cerebellum_removed"] >= 0.95).all()
    assert (fig["cerebrum_removed_by_cerebellum_mask"] < 0.02).all()
    assert (fig["template_brain_dice"] >= 0.9).all()


def test_outputs_have_provenance_sidecars(preprocessed):
    results = preprocessed / "results"
    images = [p for p in results.rglob("sub-*/**/*.nii.gz")]
    assert len(images) >= 4 * 20
    for img in images:
        side = json.loads(sidecar_path(img).read_text())
        assert side["Output"]["sha256"] == sha256(img)
        assert side["GeneratedBy"]["Rule"]
        assert side["Software"]["nibabel"]
        for entries in side["Inputs"].values():
            for entry in entries:
                path = Path(entry["path"])
                path = path if path.is_absolute() else preprocessed / path
                assert sha256(path) == entry["sha256"], f"{img}: input {path} changed"
    desc = json.loads((results / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "gamer-mril"
    # the resolved config, for people: the same as the JSON's, defaults filled in
    resolved = yaml.safe_load((results / "config.yaml").read_text())
    assert resolved == desc["Configuration"]
    assert resolved["split"]["n_folds"] == 3 and resolved["inputs"]["participant_label"] == []
    qc = pd.read_csv(results / "group" / "preprocessing_qc.tsv", sep="\t")
    assert len(qc) == 4 and (qc["dice_template_brain"] > 0.9).all()
    assert (qc["brain_ml"] > 500).all() and not qc["qc_flag"].any()   # a clean cohort


def test_no_litter_left(preprocessed):
    leftovers = [p for p in preprocessed.rglob("*") if p.name.startswith(".work-")
                 or (p.name.startswith(".") and ".nii" in p.name)]
    assert leftovers == []


def test_final_images_in_unit_range_and_crop_is_exact(preprocessed):
    anat = preprocessed / "results" / "sub-001" / "ses-1" / "anat"
    pre = "sub-001_ses-1"
    box_doc = json.loads((anat / f"{pre}_from-NDI_to-NDIcrop_mode-image_xfm.json").read_text())
    box = CropBox.from_dict(box_doc["CropBox"])
    for suffix in ("T1map", "MWFmap", "NDImap"):
        full = nib.load(anat / f"{pre}_space-NDI_desc-brain_{suffix}.nii.gz")
        crop = nib.load(anat / f"{pre}_space-NDIcrop_desc-brain_{suffix}.nii.gz")
        final = np.asarray(nib.load(anat / f"{pre}_space-NDIcrop_desc-preproc_{suffix}.nii.gz").dataobj)
        assert crop.shape == (48, 48, 56)
        assert np.array_equal(np.asarray(crop.dataobj), apply_crop(np.asarray(full.dataobj), box))
        # the cropped grid's world coordinates are the full grid's, shifted by the box
        np.testing.assert_allclose(crop.affine[:3, 3], full.affine[:3, :3] @ box.start + full.affine[:3, 3], atol=1e-4)
        assert final.min() >= 0 and final.max() <= 1 and final.max() > 0.5
    cereb = np.asarray(nib.load(anat / f"{pre}_space-NDIcrop_desc-cerebellum_mask.nii.gz").dataobj) > 0
    assert cereb.any() and (final[cereb] == 0).all()


def test_rerun_does_nothing(preprocessed, tiny_cohort):
    proc = run_snakemake(preprocessed, make_config(tiny_cohort / "rawdata"), "preprocess_all",
                         "dataset_description", "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_an_affine_template_registration_runs_through(tiny_cohort, tmp_path):
    """template_transform: Affine writes the affine alone; the steps after it (cerebellum
    removal, the QC warp) use it alone. One session, the generator's brain mask given."""
    config = make_config(tiny_cohort / "rawdata", template_transform="Affine")
    config["inputs"]["brain_mask"] = str(
        tiny_cohort / "ground_truth" / "sub-{subject}" / "ses-{session}"
        / "sub-{subject}_ses-{session}_space-qT1_desc-brain_mask.nii.gz")
    table = pd.read_csv(tiny_cohort / "rawdata" / "participants.tsv", sep="\t", dtype=str)
    sub, ses = table.subject[0], table.session[0]
    anat = Path("results") / f"sub-{sub}" / f"ses-{ses}" / "anat"
    pre = f"sub-{sub}_ses-{ses}"
    targets = [str(anat / f"{pre}_space-NDIcrop_desc-preproc_T1map.nii.gz"),
               str(anat / f"{pre}_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz")]
    proc = run_snakemake(tmp_path, config, *targets)
    assert proc.returncode == 0, proc.stderr[-5000:]
    xfms = sorted(p.name for p in (tmp_path / anat).glob("*MNI152*_xfm.*")
                  if p.suffix != ".json")
    assert xfms == [f"{pre}_from-MNI152NLin2009cAsym_to-T1map_mode-image_desc-affine_xfm.mat"]
    side = json.loads((tmp_path / anat / f"{pre}_space-MNI152NLin2009cAsym_desc-brain_mask.json")
                      .read_text())
    assert side["Facts"]["DiceWithTemplateBrainMask"] > 0.8
    cereb = json.loads((tmp_path / anat / f"{pre}_space-NDIcrop_desc-cerebellum_mask.json")
                       .read_text())
    assert cereb["Facts"]["CerebellumVolume_ml"] > 0
