"""The per-session jobs' plumbing: output names, steps inside one job, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from gamer_mril.errors import InputError
from gamer_mril.io import atomic_write_text, sha256, sidecar_path
from gamer_mril.jobs import Job
from gamer_mril.layout import Session, bids
from gamer_mril.session_jobs import StepRunner, preprocess_session


def test_names_are_the_bids_derivative_names():
    s = Session("results", "007", "2")
    anat = "results/sub-007/ses-2/anat/sub-007_ses-2"
    assert s.scaled("MWFmap") == f"{anat}_desc-scaled_MWFmap.nii.gz"
    assert s.native_brain_mask == f"{anat}_space-T1map_desc-brain_mask.nii.gz"
    assert s.xfm_to_ndi("T1map") == f"{anat}_from-T1map_to-NDI_mode-image_xfm.mat"
    assert s.ndi_grid("mask") == f"{anat}_space-NDI_desc-brain_mask.nii.gz"
    assert s.crop_box == f"{anat}_from-NDI_to-NDIcrop_mode-image_xfm.json"
    assert s.template_xfm == {
        "affine": f"{anat}_from-NDIcrop_to-MNI152NLin2009cAsym_mode-image_desc-affine_xfm.mat",
        "warp": f"{anat}_from-NDIcrop_to-MNI152NLin2009cAsym_mode-image_desc-warp_xfm.nii.gz",
        "inverse_warp":
            f"{anat}_from-MNI152NLin2009cAsym_to-NDIcrop_mode-image_desc-warp_xfm.nii.gz"}
    assert s.preproc_maps == {c: f"{anat}_space-NDIcrop_desc-preproc_{x}.nii.gz"
                              for c, x in (("qT1", "T1map"), ("MWF", "MWFmap"),
                                           ("NDI", "NDImap"))}
    assert s.cerebrum == f"{anat}_space-NDIcrop_desc-cerebrum_mask.nii.gz"
    xai = "results/sub-007/ses-2/xai/sub-007_ses-2"
    assert s.relmap("NDI", 3) == f"{xai}_space-NDI_scenario-03_relmap.nii.gz"
    assert s.qmask(11) == f"{xai}_space-NDIcrop_scenario-11_desc-quantiles_mask.nii.gz"
    assert s.top_mask(11, 40) == (f"{xai}_space-MNI152NLin2009cAsym_scenario-11_desc-top40"
                                  f"_mask.nii.gz")
    assert s.inverting == f"{xai}_space-NDIcrop_inverting.tsv"
    assert s.timing("xai") == f"{xai}_timing.tsv"
    # the workflow's wildcard pattern is the same name
    assert bids("results", "relmap", datatype="xai", space="NDI", scenario="03").format(
        subject="007", session="2") == s.relmap("NDI", 3)


def test_a_session_is_found_from_its_folder():
    s = Session.of_dir("/data/out/results/sub-A01/ses-baseline/xai")
    assert (s.root, s.subject, s.session) == ("/data/out/results", "A01", "baseline")
    assert Session.of_dir(s.dir("anat")).preproc_maps == s.preproc_maps
    for bad in ("/data/results/sub-A01/ses-1/func", "/data/results/A01/ses-1/anat",
                "/data/results/sub-A01/1/xai"):
        with pytest.raises(ValueError, match="not a session folder"):
            Session.of_dir(bad)


def _parent(tmp_path, subject="001", session="1") -> Job:
    smk = SimpleNamespace(rule="preprocess_session", input={}, output={}, params={},
                          wildcards={"subject": subject, "session": session})
    work = tmp_path / ".work"
    work.mkdir()
    return Job(smk, work)


def test_each_step_writes_sidecars_that_name_the_step_its_inputs_and_params(tmp_path):
    raw, other = tmp_path / "raw.txt", tmp_path / "other.txt"
    raw.write_text("raw")
    other.write_text("not an input of the step")
    out = tmp_path / "results" / "sub-001" / "ses-1" / "anat" / "a.nii.gz"
    timing = tmp_path / "timing.tsv"
    steps = StepRunner(_parent(tmp_path), timing)
    scratch = []

    def body(j):
        scratch.append(j.workdir)
        assert j.workdir.is_dir() and j.session == "sub-001 ses-1"
        atomic_write_text(j.smk.output.image, "made from " + Path(j.smk.input.image).read_text())
        j.sidecar(j.smk.output.image, {"Answer": 42})
        return "result"

    assert steps.run("scale_map", {"image": str(raw)}, {"image": str(out)}, {"unit": "ms"},
                     body, label="qT1") == "result"
    steps.write_timing()
    doc = json.loads(sidecar_path(out).read_text())
    assert doc["GeneratedBy"]["Rule"] == "scale_map"
    assert doc["Inputs"] == {"image": [{"path": str(raw), "sha256": sha256(raw)}]}
    assert doc["Parameters"] == {"unit": "ms"} and doc["Facts"] == {"Answer": 42}
    assert doc["Output"] == {"path": str(out), "sha256": sha256(out)}
    assert not scratch[0].exists()                 # the step's scratch folder is gone
    lines = timing.read_text().splitlines()
    assert lines[0] == "step\tseconds\tpeak_rss_mb" and lines[1].startswith("scale_map (qT1)\t")


def test_a_failing_step_is_named_and_cleaned_up(tmp_path):
    steps = StepRunner(_parent(tmp_path, "009", "2"), tmp_path / "timing.tsv")
    scratch = []

    def body(j):
        scratch.append(j.workdir)
        raise ValueError("the image is empty")

    with pytest.raises(ValueError, match="the image is empty") as info:
        steps.run("crop_to_brain", {}, {}, {}, body)
    assert "(in step crop_to_brain of sub-009 ses-2)" in info.value.__notes__
    assert not scratch[0].exists() and steps.rows == []


def test_preprocessing_names_every_bad_map_of_the_session_before_it_stops(tmp_path):
    good = tmp_path / "ndi.nii.gz"
    data = np.zeros((8, 8, 8), np.float32)
    data[2:6, 2:6, 2:6] = 0.6
    nib.save(nib.Nifti1Image(data, np.eye(4)), good)
    truncated = tmp_path / "t1.nii.gz"
    truncated.write_bytes(good.read_bytes()[:40])
    missing = tmp_path / "mwf.nii.gz"
    folder = tmp_path / "results" / "sub-001" / "ses-1" / "anat"
    params = dict(units={"qT1": "ms", "MWF": "fraction"}, skullstrip="template",
                  template_resolution=2, seed=1, coregistration="rigid",
                  crop_shape=[8, 8, 8], template_transform="SyN")
    with pytest.raises(InputError) as info:
        preprocess_session(_parent(tmp_path), folder,
                           {"qT1": truncated, "MWF": missing, "NDI": good},
                           tmp_path / "cerebellum.nii.gz", params)
    text = str(info.value)
    assert text.startswith("sub-001 ses-1: 2 bad input map(s):")
    assert f"the qT1 map {truncated}" in text and "truncated" in text
    assert f"the MWF map {missing} does not exist" in text
    # the good map was scaled; nothing was written for the bad ones, no timing table
    assert Path(Session.of_dir(folder).scaled("NDImap")).is_file()
    assert not Path(Session.of_dir(folder).scaled("T1map")).exists()
    assert not Path(Session.of_dir(folder).timing("anat")).exists()
