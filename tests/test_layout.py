"""Output names (gamer_mril.layout) and the scale step's bad-input handling."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from gamer_mril.errors import InputError
from gamer_mril.layout import Session, bids, session_of, template_transform_outputs
from gamer_mril.preprocessing import step_register_template
from gamer_mril.preprocessing_jobs import run_scale_map


def test_the_template_transforms_each_registration_writes(tmp_path):
    """One place says which step-2b transforms exist: SyN writes the affine, the warp and
    its inverse, Affine the affine alone; the rules' outputs and the step's check agree."""
    s = Session("results", "{subject}", "{session}")
    assert template_transform_outputs("SyN") == ("affine", "warp", "inverse_warp")
    assert template_transform_outputs("Affine") == ("affine",)
    assert s.template_xfm_of("SyN") == s.template_xfm
    assert s.template_xfm_of("Affine") == {"affine": s.template_xfm["affine"]}
    with pytest.raises(ValueError, match="unknown template transform"):
        template_transform_outputs("Rigid")
    # the step refuses outputs its registration does not write, before reading anything
    for transform, out in (("Affine", s.template_xfm), ("SyN", s.template_xfm_of("Affine"))):
        with pytest.raises(ValueError, match=f"a {transform} registration writes"):
            step_register_template("t1.nii.gz", "strip.nii.gz", 2, transform, tmp_path, out)


def test_names_are_the_bids_derivative_names():
    s = Session("results", "007", "2")
    anat = "results/sub-007/ses-2/anat/sub-007_ses-2"
    assert s.scaled("MWFmap") == f"{anat}_desc-scaled_MWFmap.nii.gz"
    assert s.native_brain_mask == f"{anat}_space-T1map_desc-brain_mask.nii.gz"
    assert s.xfm_to_ndi("T1map") == f"{anat}_from-T1map_to-NDI_mode-image_xfm.mat"
    assert s.ndi_grid("mask") == f"{anat}_space-NDI_desc-brain_mask.nii.gz"
    assert s.crop_box == f"{anat}_from-NDI_to-NDIcrop_mode-image_xfm.json"
    assert s.skullstrip_mask == f"{anat}_space-T1map_desc-skullstrip_mask.nii.gz"
    assert s.template_xfm == {
        "affine": f"{anat}_from-MNI152NLin2009cAsym_to-T1map_mode-image_desc-affine_xfm.mat",
        "warp": f"{anat}_from-MNI152NLin2009cAsym_to-T1map_mode-image_desc-warp_xfm.nii.gz",
        "inverse_warp":
            f"{anat}_from-T1map_to-MNI152NLin2009cAsym_mode-image_desc-warp_xfm.nii.gz"}
    assert s.preproc_maps == {c: f"{anat}_space-NDIcrop_desc-preproc_{x}.nii.gz"
                              for c, x in (("qT1", "T1map"), ("MWF", "MWFmap"),
                                           ("NDI", "NDImap"))}
    assert s.cerebrum == f"{anat}_space-NDIcrop_desc-cerebrum_mask.nii.gz"
    xai = "results/sub-007/ses-2/xai/sub-007_ses-2"
    assert s.relmaps("NDI") == f"{xai}_space-NDI_relmap.nii.gz"
    assert s.qmasks == f"{xai}_space-NDIcrop_desc-quantiles_mask.nii.gz"
    assert s.top_masks(40) == f"{xai}_space-MNI152NLin2009cAsym_desc-top40_mask.nii.gz"
    assert s.inverting == f"{xai}_space-NDIcrop_inverting.tsv"
    # the workflow's wildcard patterns are the same names
    pattern = Session("results", "{subject}", "{session}")
    assert pattern.relmaps("NDI").format(subject="007", session="2") == s.relmaps("NDI")
    assert bids("results", "relmap", datatype="xai", space="NDI").format(
        subject="007", session="2") == s.relmaps("NDI")


def test_the_session_of_a_file_is_read_from_its_name():
    s = Session("/data/out/results", "A01", "baseline")
    assert session_of(s.top_masks(40)) == ("A01", "baseline")
    assert session_of(s.inverting) == ("A01", "baseline")
    for bad in ("/data/results/group/table_ii.tsv", "/data/sub-A01/ses-1/anat/T1map.nii.gz"):
        with pytest.raises(ValueError, match="not a per-session file"):
            session_of(bad)


def test_scaling_names_every_bad_map_of_the_session_before_it_stops(tmp_path):
    good = tmp_path / "ndi.nii.gz"
    data = np.zeros((8, 8, 8), np.float32)
    data[2:6, 2:6, 2:6] = 0.6
    nib.save(nib.Nifti1Image(data, np.eye(4)), good)
    truncated = tmp_path / "t1.nii.gz"
    truncated.write_bytes(good.read_bytes()[:40])
    missing = tmp_path / "mwf.nii.gz"
    s = Session(tmp_path / "results", "001", "1")
    out = {"qT1": s.scaled("T1map"), "MWF": s.scaled("MWFmap"), "NDI": s.scaled("NDImap")}
    with pytest.raises(InputError) as info:
        run_scale_map({"qT1": truncated, "MWF": missing, "NDI": good}, out,
                      {"qT1": "ms", "MWF": "fraction"}, subject="001", session="1")
    text = str(info.value)
    assert text.startswith("sub-001 ses-1: 2 bad input map(s):")
    assert f"the qT1 map {truncated}" in text and "truncated" in text
    assert f"the MWF map {missing} does not exist" in text
    assert "(rule scale_map, sub-001 ses-1)" in info.value.__notes__
    # the job failed: nothing of it is left, not even the good map or its sidecar
    folder = tmp_path / "results" / "sub-001" / "ses-1" / "anat"
    assert not folder.exists() or list(folder.iterdir()) == []
