"""Quality control on the finished 8-session run (the ``trained`` fixture): constructed
failures are flagged with the right reason, and the QC table's figures are the steps'.

* an MWF map shifted 15 mm against NDI after its co-registration (the scaled map's
  header moved, then resampled through the session's own transform) loses its similarity
  with NDI and is flagged for it;
* a brain mask eroded by 5 voxels loses brain volume and overlap with the template's
  brain mask, and is flagged for both.

These failures are made by the steps' own functions on copies of one session's files, and
judged against the other sessions' recorded figures, as the cohort's QC table would.

* qc.exclude_flagged, in a real rerun on a copy of the run: one session's MWF map
  replaced by another subject's (a swapped file) cannot be co-registered to its NDI map,
  is flagged (kind coregistration) and left out of the split, the training and the
  predictions, with its reason in the logs and the sidecar; its preprocessing stays.
"""

from __future__ import annotations

import json
import os
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import binary_erosion

from gamer_mril.io import sidecar_path
from gamer_mril.layout import Session
from gamer_mril.preprocessing import step_resample_to_ndi, step_warp_mask_to_template
from gamer_mril.qc import MIN_DICE, qc_flags

from .conftest import MAP_PATTERNS, TEST_CROP_CUT_SHARE, jobs_run, run_snakemake, training_config
from .test_audit_workflow import copy_run
from .test_incremental import dry_run

pytestmark = pytest.mark.slow


def _qc(run):
    return pd.read_csv(run / "results" / "group" / "preprocessing_qc.tsv", sep="\t",
                       dtype={"subject": str, "session": str})


def _session(run):
    table = _qc(run)
    row = table.iloc[0]
    return table, Session(run / "results", row["subject"], row["session"])


def test_qc_table_has_the_steps_figures_and_flags_nothing_on_a_good_run(trained):
    table = _qc(trained)
    assert len(table) == 8
    for column in ("brain_ml", "nmi_ndi_T1map", "nmi_ndi_MWFmap", "cerebellum_ml",
                   "dice_template_brain", "jaccard_template_brain"):
        assert table[column].notna().all(), column
    # Jaccard and Dice of the same masks: J = D / (2 - D)
    np.testing.assert_allclose(table["jaccard_template_brain"],
                               table["dice_template_brain"]
                               / (2 - table["dice_template_brain"]), rtol=1e-9)
    assert table["nmi_ndi_MWFmap"].between(0.05, 1).all()
    assert not table["qc_flag"].any(), table["qc_reasons"].tolist()
    # step 3: each co-registration tried two starts and kept the better mutual
    # information: qT1 from the centres and the rotation search, MWF from the centres
    # and qT1's transform
    starts = {"T1map": {"centre", "rotation search"}, "MWFmap": {"centre", "other contrast"}}
    for subject, session in zip(table["subject"], table["session"]):
        s = Session(trained / "results", subject, session)
        for c, names in starts.items():
            facts = json.loads(sidecar_path(s.xfm_to_ndi(c)).read_text())["Facts"]
            tried = facts["MetricByStart"]
            assert set(tried) == names, (c, tried)
            assert facts["Start"] == min(tried, key=tried.get)


def test_mwf_shifted_after_coregistration_is_flagged(trained, tmp_path):
    table, s = _session(trained)
    moving = {c: s.scaled(suffix) for c, suffix in (("qT1", "T1map"), ("MWF", "MWFmap"))}
    xfms = {c: s.xfm_to_ndi(suffix) for c, suffix in (("qT1", "T1map"), ("MWF", "MWFmap"))}
    ndi = s.scaled("NDImap")

    def resample(moving_maps, where):
        where.mkdir()
        outs = {c: where / f"{c}.nii.gz" for c in ("qT1", "MWF", "NDI")}
        return step_resample_to_ndi(ndi, moving_maps, xfms, s.native_brain_mask, outs,
                                    where / "mask.nii.gz")

    # the same step again gives the figure the run recorded
    again = resample(moving, tmp_path / "again")["NormalizedMutualInformationWithNDI"]
    assert again["MWF"] == pytest.approx(table.loc[0, "nmi_ndi_MWFmap"], rel=1e-9)

    img = nib.load(moving["MWF"])
    shifted_affine = img.affine.copy()
    shifted_affine[0, 3] += 15.0                          # 15 mm along x, after step 3
    shifted = tmp_path / "shifted_MWFmap.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), shifted_affine, img.header), shifted)
    nmi = resample({**moving, "MWF": str(shifted)},
                   tmp_path / "shifted")["NormalizedMutualInformationWithNDI"]
    assert nmi["qT1"] == pytest.approx(again["qT1"], rel=1e-9)      # qT1 untouched
    assert nmi["MWF"] < again["MWF"]

    broken = table.drop(columns=["qc_flag", "qc_reasons"])
    broken.loc[0, "nmi_ndi_MWFmap"] = nmi["MWF"]
    flagged = qc_flags(broken, max_crop_cut_share=TEST_CROP_CUT_SHARE)
    assert flagged["qc_flag"].tolist() == [True] + [False] * 7, flagged["qc_reasons"]
    assert flagged.loc[0, "qc_reasons"].startswith("nmi_ndi_MWFmap ")
    assert "co-registration to NDI suspect" in flagged.loc[0, "qc_reasons"]


def test_brain_mask_eroded_by_five_voxels_is_flagged(trained, tmp_path):
    table, s = _session(trained)
    mask_img = nib.load(s.crop_grid("mask"))
    mask = np.asarray(mask_img.dataobj) > 0
    eroded = binary_erosion(mask, iterations=5)
    path = tmp_path / "eroded_mask.nii.gz"
    nib.save(nib.Nifti1Image(eroded.astype(np.uint8), mask_img.affine), path)
    # step 6's transforms (the fixture's template registration is affine: no warps)
    xfm = {"coreg": s.xfm_to_ndi("T1map"),
           **{k: v for k, v in s.template_xfm.items() if os.path.exists(v)}}
    facts = step_warp_mask_to_template(path, xfm, 2, tmp_path / "warped.nii.gz",
                                       tmp_path / "work")
    assert facts["DiceWithTemplateBrainMask"] < MIN_DICE
    assert facts["DiceWithTemplateBrainMask"] < table.loc[0, "dice_template_brain"]

    assert eroded.sum() < 0.7 * mask.sum()
    broken = table.drop(columns=["qc_flag", "qc_reasons"])
    broken.loc[0, "dice_template_brain"] = facts["DiceWithTemplateBrainMask"]
    broken.loc[0, "jaccard_template_brain"] = facts["JaccardWithTemplateBrainMask"]
    # the brain volume of the eroded mask (in the cropped grid, where nothing was cut)
    broken.loc[0, "brain_ml"] = table.loc[0, "brain_ml"] * eroded.sum() / mask.sum()
    flagged = qc_flags(broken, max_crop_cut_share=TEST_CROP_CUT_SHARE)
    assert flagged["qc_flag"].tolist() == [True] + [False] * 7, flagged["qc_reasons"]
    reasons = flagged.loc[0, "qc_reasons"]
    assert "Dice with the template brain mask" in reasons
    assert "brain_ml" in reasons


def test_every_session_has_its_reportlets_and_the_viewer_is_offline(trained):
    import xml.etree.ElementTree as ET

    from gamer_mril.layout import REPORTLETS

    table = _qc(trained)
    for subject, session in zip(table["subject"], table["session"]):
        s = Session(trained / "results", subject, session)
        for name in (*REPORTLETS, "relevance"):
            root = ET.parse(s.reportlet(name)).getroot()
            assert root.tag == "{http://www.w3.org/2000/svg}svg", (subject, name)
            flicker = {g.get("class") for g in root.iter("{http://www.w3.org/2000/svg}g")
                       if g.get("class")}
            assert flicker == ({"background-svg", "foreground-svg"}
                               if name in ("coregT1map", "coregMWFmap", "template")
                               else set()), (subject, name)
    viewer = (trained / "results" / "group" / "heatmap_viewer.html").read_text()
    assert "brainsprite" in viewer and "<iframe" in viewer
    assert "src=&quot;http" not in viewer and 'src="http' not in viewer    # nothing fetched


def test_a_session_flagged_for_its_coregistration_is_left_out(trained, training_cohort,
                                                              tmp_path):
    run, cohort = copy_run(trained, training_cohort, tmp_path)
    config = training_config(cohort)          # qc.exclude_flagged: the schema's default
    raw = cohort / "rawdata"
    subjects = sorted(_qc(run)["subject"])
    victim, donor = subjects[0], subjects[1]

    def mwf(subject):
        return raw / MAP_PATTERNS["MWF"].format(subject=subject, session="1")

    shutil.copyfile(mwf(donor), mwf(victim))          # the wrong subject's MWF map
    proc = run_snakemake(run, config, "preprocess_all", "train_all")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-5000:]
    jobs = jobs_run(proc)
    assert jobs["coregister_to_ndi"] == 1 and jobs["qc_reportlets"] == 1
    assert jobs["analysed_sessions"] == 1
    assert jobs["train_fold"] == 2 and jobs["split_sessions"] == 1

    qc = _qc(run).set_index("subject")
    assert qc.loc[victim, "qc_flag"], qc.loc[victim].to_dict()
    assert "coregistration" in qc.loc[victim, "qc_flag_kinds"].split(";")
    reasons = qc.loc[victim, "qc_reasons"]
    assert "nmi_ndi_MWFmap" in reasons and "co-registration to NDI suspect" in reasons
    assert not qc.drop(index=victim)["qc_flag"].any(), qc["qc_reasons"].tolist()

    group = run / "results" / "group"

    def subjects_of(name):
        return set(pd.read_csv(group / name, sep="\t", dtype={"subject": str}).subject)

    others = set(subjects) - {victim}
    for name in ("analysed_sessions.tsv", "split.tsv", "predictions.tsv"):
        assert subjects_of(name) == others, name
    excluded = pd.read_csv(group / "excluded_sessions.tsv", sep="\t", dtype=str)
    assert excluded.values.tolist() == [[victim, "1", "qc.exclude_flagged",
                                         f"QC flag: {reasons}"]]
    facts = json.loads(sidecar_path(group / "analysed_sessions.tsv").read_text())["Facts"]
    assert facts["Excluded"] == [{"subject": victim, "session": "1", "by":
                                  "qc.exclude_flagged", "reason": f"QC flag: {reasons}"}]
    assert facts["Sessions"] == len(others)
    line = (f"sub-{victim} ses-1 left out of training and assessment (qc.exclude_flagged): "
            f"QC flag: nmi_ndi_MWFmap")
    assert line in (run / "results" / "logs" / "analysed_sessions.log").read_text()
    assert f"sub-{victim}_ses-1 (qc.exclude_flagged: QC flag: nmi_ndi_MWFmap" in text

    # its preprocessing stays (made again from the swapped map), and nothing after the
    # checkpoint is planned for it
    s = Session(run / "results", victim, "1")
    for path in s.preproc_maps.values():
        assert os.path.getmtime(path) > os.path.getmtime(mwf(victim)), path
    planned = dry_run(run, config, "all")
    assert {sub for r, sub, _ in planned if sub and r != "session_report"} == others
    # but its page, which shows its preprocessing and says why it is left out
    assert {r for r, sub, _ in planned if sub == victim} == {"session_report"}
