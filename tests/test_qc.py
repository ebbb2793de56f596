"""Quality control of the preprocessing (gamer_mril.qc: flags, the sessions left out) and the
similarity and overlap measures it reads (gamer_mril.similarity), against hand-computed
cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gamer_mril.qc import qc_flags


def _table(**columns):
    n = len(next(iter(columns.values())))
    return pd.DataFrame({"subject": [f"{i:02d}" for i in range(n)], "session": ["1"] * n,
                         **columns})


def test_low_dice_is_flagged_with_its_reason():
    out = qc_flags(_table(dice_template_brain=[0.95, 0.89, 0.9]))
    assert out["qc_flag"].tolist() == [False, True, False]
    assert out.loc[1, "qc_reasons"] == "Dice with the template brain mask 0.890 < 0.9"


def test_volume_outside_median_plus_minus_three_robust_sd():
    # median (1000 + 1010) / 2 = 1005; |x - 1005| = 5, 15, 5, 25, 15, 395 -> MAD 15,
    # robust sd 15 x 1.4826 = 22.24
    volumes = [1000, 990, 1010, 980, 1020, 1400]
    out = qc_flags(_table(brain_ml=volumes))
    assert out["qc_flag"].tolist() == [False] * 5 + [True]
    assert "brain_ml 1400.0 outside the cohort's 1005.0 +- 3 x 22.2" in out.loc[5, "qc_reasons"]
    # half a robust sd (11.1) also catches 990, 980 and 1020 (15, 25, 15 away)
    loose = qc_flags(_table(brain_ml=volumes), mad_limit=0.5)
    assert loose["qc_flag"].tolist() == [False, True, False, True, True, True]


def test_reasons_add_up_and_small_cohorts_are_not_judged_on_volume():
    out = qc_flags(_table(brain_ml=[1000, 2000, 1000], dice_template_brain=[0.5, 0.95, 0.95]))
    assert out["qc_flag"].tolist() == [True, False, False]   # fewer than 5: no volume check
    many = qc_flags(_table(cerebellum_ml=[100.0] * 5 + [300.0],
                           dice_template_brain=[0.95] * 5 + [0.5]))
    # no spread among the rest: MAD 0 -> no volume flags; the Dice still counts
    assert many["qc_flag"].tolist() == [False] * 5 + [True]
    assert many.loc[5, "qc_reasons"].count(";") == 0


# ------------------------------------------------------ similarity with NDI (step 4)

def test_nmi_exact_cases():
    from gamer_mril.similarity import normalized_mutual_information as nmi

    mask = np.ones((2, 2, 1), dtype=bool)
    a = np.array([0.0, 0.0, 1.0, 1.0]).reshape(2, 2, 1)
    b = np.array([0.0, 1.0, 0.0, 1.0]).reshape(2, 2, 1)
    assert nmi(a, a, mask, bins=2) == pytest.approx(1.0)
    assert nmi(a, 1 - a, mask, bins=2) == pytest.approx(1.0)       # contrast reversed
    assert nmi(a, b, mask, bins=2) == pytest.approx(0.0, abs=1e-12)  # independent
    # a determines half of c: H(a) = H(c) = ln 2 ... c = a except one voxel
    c = np.array([0.0, 1.0, 1.0, 1.0]).reshape(2, 2, 1)
    # joint (a, c): (0,0) 1, (0,1) 1, (1,1) 2; H(a) = ln 2, H(c) = -(1/4 ln 1/4 + 3/4 ln 3/4)
    p = np.array([0.25, 0.25, 0.5])
    h_joint = -(p * np.log(p)).sum()
    h_a, h_c = np.log(2), -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))
    expected = (h_a + h_c - h_joint) / ((h_a + h_c) / 2)
    assert nmi(a, c, mask, bins=2) == pytest.approx(expected)


def test_nmi_ignores_units_and_falls_when_a_map_is_shifted():
    from scipy.ndimage import gaussian_filter, shift

    from gamer_mril.similarity import normalized_mutual_information as nmi

    rng = np.random.default_rng(0)
    ndi = gaussian_filter(rng.random((30, 30, 30)), 2)
    mask = np.zeros(ndi.shape, dtype=bool)
    mask[5:25, 5:25, 5:25] = True
    moved = 1500 - 900 * ndi                                     # other units, reversed
    aligned = nmi(moved, ndi, mask)
    assert aligned == pytest.approx(1.0)
    assert nmi(shift(moved, (4, 0, 0), order=1), ndi, mask) < 0.5 * aligned
    with pytest.raises(ValueError, match="empty"):
        nmi(moved, ndi, np.zeros(ndi.shape, dtype=bool))


def test_low_similarity_is_flagged_on_one_side_only():
    values = [0.60, 0.62, 0.61, 0.63, 0.59, 0.30, 0.95]
    out = qc_flags(_table(nmi_ndi_MWFmap=values))
    # median 0.61, |x - 0.61| = .01 .01 0 .02 .02 .31 .34 -> MAD 0.02, sd 0.02965
    assert out["qc_flag"].tolist() == [False] * 5 + [True, False]
    assert out.loc[5, "qc_reasons"] == (
        "nmi_ndi_MWFmap 0.300 below the cohort's 0.610 - 3 x 0.030 (co-registration to "
        "NDI suspect)")


# ---------------------------------------------------------------- nipype's Overlap

def test_overlap_by_nipype_against_hand_counts(tmp_path, monkeypatch):
    import nibabel as nib

    from gamer_mril.similarity import overlap

    a = np.zeros((4, 4, 4), np.uint8)
    b = np.zeros((4, 4, 4), np.uint8)
    a.reshape(-1)[:10] = 1                                         # 10 voxels
    b.reshape(-1)[6:12] = 1                                        # 6 voxels, 4 shared
    for name, data in (("a", a), ("b", b)):
        nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / f"{name}.nii.gz")
    monkeypatch.chdir(tmp_path)                   # relative paths, as Snakemake gives them
    got = overlap("a.nii.gz", "b.nii.gz", "work")
    assert Path.cwd() == tmp_path
    assert got["dice"] == pytest.approx(2 * 4 / (10 + 6))
    assert got["jaccard"] == pytest.approx(4 / 12)
    assert not list(tmp_path.glob("overlap_diff*"))          # nipype wrote in work/


# ------------------------------------------------------------------- qc.exclude

def test_exclusions_from_a_list_or_a_mapping():
    from gamer_mril.exclusion import exclusions

    assert exclusions([]) == {} and exclusions(None) == {}
    assert exclusions(["sub-01_ses-2"]) == {("01", "2"): "listed in qc.exclude"}
    assert exclusions({"sub-01_ses-2": "MWF shifted", "sub-3_ses-A": None}) == {
        ("01", "2"): "MWF shifted", ("3", "A"): "listed in qc.exclude"}
    with pytest.raises(ValueError, match="'sub-01' is not a session label"):
        exclusions(["sub-01"])


def test_check_exclusions_names_unknown_sessions_and_keeps_one():
    from gamer_mril.exclusion import check_exclusions

    sessions = [("01", "1"), ("02", "1")]
    check_exclusions({("01", "1"): "x"}, sessions)
    with pytest.raises(ValueError, match="sub-09_ses-1"):
        check_exclusions({("09", "1"): "x"}, sessions)
    with pytest.raises(ValueError, match="leaves no session"):
        check_exclusions({s: "x" for s in sessions}, sessions)


def test_analysed_sessions_table_and_sidecar(tmp_path):
    import json

    from gamer_mril.inputs import load_participants
    from gamer_mril.exclusion import run_analysed_sessions

    table = tmp_path / "participants.tsv"
    table.write_text("subject\tsession\tage\tedss\n01\t1\t30\t2\n01\t2\t31\t2.5\n"
                     "02\t1\t40\t6\n")
    out = tmp_path / "group" / "analysed_sessions.tsv"
    run_analysed_sessions(table, out, exclude={"sub-01_ses-2": "MWF shifted"})
    kept = load_participants(out)
    assert list(zip(kept["subject"], kept["session"])) == [("01", "1"), ("02", "1")]
    facts = json.loads(out.with_name(out.name + ".json").read_text())["Facts"]
    assert facts["Excluded"] == [{"subject": "01", "session": "2", "reason": "MWF shifted",
                                  "by": "qc.exclude"}]
    assert facts["Sessions"] == 2


# ------------------------------------------------- values outside the physical range

def test_mwf_with_15_percent_negative_voxels_is_counted_and_flagged(tmp_path):
    """An MWF map with 15% of its brain negative: the scale step counts them as clipped
    and negative, and the QC table flags the session with the map and the share."""
    import nibabel as nib

    from gamer_mril.io import write_sidecar
    from gamer_mril.preprocessing import step_scale
    from gamer_mril.qc import qc_table

    rng = np.random.default_rng(0)
    brain = np.zeros((20, 20, 20), bool)
    brain[2:18, 2:18, 2:18] = True
    mwf = np.where(brain, rng.uniform(0.02, 0.25, brain.shape), 0).astype(np.float32)
    negative = brain & (rng.random(brain.shape) < 0.15)
    mwf[negative] = -0.05
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    sessions = {"01": mwf, "02": np.abs(mwf)}             # the second one is clean
    sidecars = []
    for label, data in sessions.items():
        raw = tmp_path / f"sub-{label}_ses-1_MWFmap.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), raw)
        out = tmp_path / f"sub-{label}_ses-1_desc-scaled_MWFmap.nii.gz"
        facts = step_scale(raw, out, "MWF", "fraction", f"sub-{label} ses-1")
        sidecars.append(write_sidecar(out, rule="scale_map", inputs={"image": raw},
                                      extra={"Facts": facts}))
        mask = tmp_path / f"sub-{label}_ses-1_desc-brain_mask.nii.gz"
        nib.save(nib.Nifti1Image(brain.astype(np.uint8), affine), mask)
        brain_ml = float(brain.sum() * 8 / 1000)
        sidecars.append(write_sidecar(mask, rule="make_brain_mask", inputs={},
                                      extra={"Facts": {"BrainVolume_ml": brain_ml}}))
    table = qc_table(sidecars).set_index("subject")
    n = int(negative.sum())
    assert table.loc["01", "clipped_MWFmap"] == n and table.loc["01", "negative_MWFmap"] == n
    assert table.loc["01", "impossible_share_MWFmap"] == pytest.approx(n / brain.sum())
    assert table.loc["01", "qc_flag"] and not table.loc["02", "qc_flag"]
    reason = table.loc["01", "qc_reasons"]
    assert reason.startswith(f"MWFmap: {100 * n / brain.sum():.1f}% of the brain's volume")
    assert f"{n} negative" in reason and "qc.max_clipped_share 0.01" in reason
    # a looser setting lets it pass
    assert not qc_table(sidecars, max_clipped_share=0.5)["qc_flag"].any()


# ------------------------------------------------------------ geometry (step 5, voxels)

def _crop_session(tmp_path, label, grid, brain_slices, crop_shape, **kw):
    """One session's NDI-grid maps and brain mask (a box of ones), cropped by
    run_crop_to_brain; returns the cropped mask's path (its sidecar has the facts)."""
    import nibabel as nib

    from gamer_mril.preprocessing_jobs import run_crop_to_brain

    mask = np.zeros(grid, np.uint8)
    mask[brain_slices] = 1
    affine = np.diag([1.8, 1.8, 1.8, 1.0])
    d = tmp_path / f"sub-{label}"
    d.mkdir()
    maps, out = {}, {}
    for c, suffix in (("qT1", "T1map"), ("MWF", "MWFmap"), ("NDI", "NDImap")):
        maps[c] = d / f"sub-{label}_ses-1_space-NDI_desc-brain_{suffix}.nii.gz"
        nib.save(nib.Nifti1Image(mask * 0.5, affine), maps[c])
        out[c] = d / f"sub-{label}_ses-1_space-NDIcrop_desc-brain_{suffix}.nii.gz"
    mask_in = d / f"sub-{label}_ses-1_space-NDI_desc-brain_mask.nii.gz"
    nib.save(nib.Nifti1Image(mask, affine), mask_in)
    out_mask = d / f"sub-{label}_ses-1_space-NDIcrop_desc-brain_mask.nii.gz"
    run_crop_to_brain(maps, mask_in, out, out_mask, d / f"sub-{label}_ses-1_box.json",
                      crop_shape=crop_shape, subject=label, session="1", **kw)
    return out_mask


def test_a_crop_that_cuts_3_percent_of_the_brain_is_flagged_with_the_shape_needed(tmp_path):
    from gamer_mril.io import sidecar_path
    from gamer_mril.qc import qc_table

    # brain 33 x 10 x 10 voxels; a crop of 32 along the first axis cuts one slab of 100
    # voxels: 100 / 3300 = 3.0%; 33 fits in the other session's crop
    log_file = tmp_path / "crop.log"
    cut = _crop_session(tmp_path, "01", (40, 12, 12),
                        (slice(2, 35), slice(1, 11), slice(1, 11)), (32, 12, 12),
                        log_file=log_file)
    assert ("sub-01 ses-1: the crop cuts 3.0% of the brain (bounding box [33, 10, 10] "
            "voxels, crop_shape [32, 12, 12])") in log_file.read_text()
    whole = _crop_session(tmp_path, "02", (40, 12, 12),
                          (slice(2, 34), slice(1, 11), slice(1, 11)), (32, 12, 12))
    table = qc_table([sidecar_path(cut), sidecar_path(whole)]).set_index("subject")
    assert table.loc["01", "crop_cut_share"] == pytest.approx(100 / 3300)
    assert table.loc["02", "crop_cut_share"] == 0
    assert table.loc["01", "qc_flag"] and not table.loc["02", "qc_flag"]
    assert table.loc["01", "qc_reasons"] == (
        "crop_to_brain cut 3.0% of the brain (qc.max_crop_cut_share 0.02); enlarge "
        "preprocessing.crop_shape to at least [33, 12, 12]")
    # a looser setting lets it pass
    assert not qc_table([sidecar_path(cut)], max_crop_cut_share=0.05)["qc_flag"].any()


def test_a_crop_that_cuts_12_percent_stops_naming_session_file_and_size(tmp_path):
    from gamer_mril.errors import InputError

    # brain 25 x 10 x 10; a crop of 22 cuts 3 slabs: 300 / 2500 = 12% > 10%
    with pytest.raises(InputError) as err:
        _crop_session(tmp_path, "07", (30, 12, 12),
                      (slice(2, 27), slice(1, 11), slice(1, 11)), (22, 12, 12))
    msg = str(err.value)
    assert msg.startswith("sub-07 ses-1: crop_to_brain would cut 12.0% of the brain (300 of "
                          "2500 voxels of the brain mask ")
    assert "sub-07_ses-1_space-NDI_desc-brain_mask.nii.gz" in msg
    assert "preprocessing.max_crop_cut_share_stop 0.1" in msg
    assert "bounding box is [25, 10, 10] voxels, preprocessing.crop_shape [22, 12, 12]" in msg
    assert "set preprocessing.crop_shape to at least [25, 12, 12]" in msg
    assert not list((tmp_path / "sub-07").glob("*NDIcrop*"))      # nothing left behind
    # the same cut passes under a higher stop (and is then only flagged by the QC)
    _crop_session(tmp_path / "sub-07", "07", (30, 12, 12),
                  (slice(2, 27), slice(1, 11), slice(1, 11)), (22, 12, 12),
                  max_crop_cut_share_stop=0.2)


def test_the_matrix_and_the_brain_at_the_grids_edge_are_recorded_not_flagged(tmp_path):
    from gamer_mril.io import sidecar_path
    from gamer_mril.qc import qc_table

    # 12 voxels along axis 1 against a crop of 14 (padded, as the paper's 96 NDI slices
    # are to 112); the brain fills 1..11 in one session, 0..12 (meets the edge) in the other
    inside = _crop_session(tmp_path, "01", (20, 12, 12),
                           (slice(2, 18), slice(1, 11), slice(1, 11)), (20, 14, 12))
    edge = _crop_session(tmp_path, "02", (20, 12, 12),
                         (slice(2, 18), slice(0, 12), slice(1, 11)), (20, 14, 12))
    table = qc_table([sidecar_path(inside), sidecar_path(edge)])
    assert table["ndi_matrix"].tolist() == ["20x12x12"] * 2
    assert table["crop_shape"].tolist() == ["20x14x12"] * 2
    assert table["brain_bbox_vox"].tolist() == ["16x10x10", "16x12x10"]
    assert table["brain_at_grid_edge"].tolist() == ["0x0x0", "0x1x0"]
    assert table["crop_cut_share"].tolist() == [0, 0]
    assert not table["qc_flag"].any()


def test_a_map_with_voxels_over_twice_ndis_is_flagged(tmp_path):
    import nibabel as nib

    from gamer_mril.io import write_sidecar
    from gamer_mril.preprocessing import step_scale
    from gamer_mril.qc import qc_table

    data = np.zeros((8, 8, 8), np.float32)
    data[2:6, 2:6, 2:6] = 0.1
    # NDI 1.8 mm; the paper's MWF 1.25 x 1.25 x 5 mm (cube root of 7.81 mm3: 1.98 mm,
    # not flagged); a qT1 map at 4 mm (4 > 2 x 1.8: flagged)
    voxels = {"NDImap": (1.8, 1.8, 1.8), "MWFmap": (1.25, 1.25, 5.0), "T1map": (4.0,) * 3}
    sidecars = []
    for suffix, voxel in voxels.items():
        raw = tmp_path / f"sub-01_ses-1_{suffix}.nii.gz"
        nib.save(nib.Nifti1Image(data, np.diag([*voxel, 1.0])), raw)
        out = tmp_path / f"sub-01_ses-1_desc-scaled_{suffix}.nii.gz"
        contrast = {"NDImap": "NDI", "MWFmap": "MWF", "T1map": "MWF"}[suffix]
        facts = step_scale(raw, out, contrast, "fraction", "sub-01 ses-1")
        assert facts["VoxelSize_mm"] == pytest.approx(list(voxel))
        sidecars.append(write_sidecar(out, rule="scale_map", inputs={"image": raw},
                                      extra={"Facts": facts}))
    table = qc_table(sidecars)
    assert table.loc[0, "voxel_mm_MWFmap"] == pytest.approx((1.25 * 1.25 * 5) ** (1 / 3))
    assert table.loc[0, "qc_reasons"] == (
        "T1map: voxels of 4.00 mm (cube root of the voxel volume), more than 2 x NDI's "
        "1.80 mm; the map is much coarser than the NDI grid it is resampled to")


# ------------------------------------------------------ fewer than five sessions

def test_four_sessions_fall_back_to_the_nmi_floor_and_the_log_says_why(tmp_path):
    from gamer_mril.io import write_sidecar
    from gamer_mril.qc import run_preprocessing_qc

    images = []
    for i, nmi in enumerate([0.34, 0.33, 0.35, 0.05]):
        path = tmp_path / f"sub-0{i}_ses-1_space-NDI_desc-brain_MWFmap.nii.gz"
        path.write_bytes(b"x")
        write_sidecar(path, rule="resample_to_ndi", inputs={},
                      extra={"Facts": {"NormalizedMutualInformationWithNDI": nmi}})
        images.append(path)
        mask = tmp_path / f"sub-0{i}_ses-1_desc-brain_mask.nii.gz"
        mask.write_bytes(b"x")
        write_sidecar(mask, rule="make_brain_mask", inputs={},
                      extra={"Facts": {"BrainVolume_ml": [1100, 1200, 1300, 3000][i]}})
        images.append(mask)
    out, log_file = tmp_path / "qc.tsv", tmp_path / "qc.log"
    run_preprocessing_qc(images, out, log_file=log_file)
    table = pd.read_csv(out, sep="\t", dtype={"subject": str})
    assert table["qc_flag"].tolist() == [False, False, False, True]
    assert table.loc[3, "qc_reasons"].startswith(
        "nmi_ndi_MWFmap 0.050 below the absolute floor 0.15 (co-registration to NDI "
        "suspect; 4 session(s) with the figure, robust bounds")
    text = log_file.read_text()
    assert ("QC bounds: nmi_ndi_MWFmap: 4 session(s) with the figure, robust bounds "
            "(median +- qc.mad_limit robust sd) need at least 5; judged against the "
            "absolute floor 0.15 instead (Dice against qc.min_dice 0.9 as always)") in text
    # the volume of 3000 ml is not judged, and the log says so
    assert "QC bounds: brain_ml: 4 session(s) with the figure" in text
    assert "; not judged" in text
    # five sessions: robust bounds again (0.05 is far below 0.34 - 3 x 0.015), no floor note
    five = qc_flags(_table(nmi_ndi_MWFmap=[0.34, 0.33, 0.35, 0.34, 0.05]), notes=(n := []))
    assert five["qc_flag"].tolist() == [False] * 4 + [True]
    assert "below the cohort's" in five.loc[4, "qc_reasons"] and n == []


def test_the_geometry_defaults_are_the_schemas_and_the_configs():
    import yaml

    from gamer_mril.geometry import MAX_CROP_CUT_SHARE_STOP
    from gamer_mril.qc import MAX_CROP_CUT_SHARE

    root = Path(__file__).parents[1]
    props = yaml.safe_load((root / "schemas" / "config.schema.yaml").read_text())["properties"]
    config = yaml.safe_load((root / "config.yaml").read_text())
    assert props["qc"]["properties"]["max_crop_cut_share"]["default"] == \
        config["qc"]["max_crop_cut_share"] == MAX_CROP_CUT_SHARE == 0.02
    assert props["preprocessing"]["properties"]["max_crop_cut_share_stop"]["default"] == \
        config["preprocessing"]["max_crop_cut_share_stop"] == MAX_CROP_CUT_SHARE_STOP == 0.1


# ------------------------------------------- kinds of flag and qc.exclude_flagged

def _one_failure_per_row():
    """Eight sessions: rows 0-5 each fail one check (Dice 0.5; MWF's similarity 0.30
    against a cohort near 0.605 with robust sd 0.0148; 5% of MWF impossible; a crop cut
    of 3%; qT1 voxels of 4 mm against NDI's 1.8 mm; 1400 ml against 1002.5 +- 3 x 14.8),
    rows 6 and 7 none."""
    clean = dict(dice_template_brain=0.95, nmi_ndi_MWFmap=0.61, impossible_share_MWFmap=0.0,
                 crop_cut_share=0.0, voxel_mm_NDImap=1.8, voxel_mm_T1map=1.8)
    columns = {k: [v] * 8 for k, v in clean.items()}
    columns["nmi_ndi_MWFmap"] = [0.60, 0.30, 0.61, 0.62, 0.59, 0.60, 0.61, 0.62]
    columns["brain_ml"] = [1000, 990, 1010, 980, 1020, 1400, 1000, 1005]
    for row, (column, bad) in enumerate((("dice_template_brain", 0.5),
                                         ("nmi_ndi_MWFmap", 0.30),
                                         ("impossible_share_MWFmap", 0.05),
                                         ("crop_cut_share", 0.03),
                                         ("voxel_mm_T1map", 4.0))):
        columns[column][row] = bad
    return _table(**columns)


def test_each_reason_has_its_kind():
    from gamer_mril.qc import FLAG_KINDS

    out = qc_flags(_one_failure_per_row())
    assert out["qc_flag_kinds"].tolist() == [
        "dice", "coregistration", "clipped", "crop", "voxel", "volume", "", ""]
    assert out["qc_flag"].tolist() == [True] * 6 + [False] * 2
    assert sorted(out["qc_flag_kinds"][:6]) == sorted(FLAG_KINDS)   # every kind once
    # the reason beside each kind is the check's own
    for row, start in enumerate(("Dice with the template brain mask 0.500",
                                 "nmi_ndi_MWFmap 0.300 below the cohort's 0.605",
                                 "MWFmap: 5.0% of the brain's volume",
                                 "crop_to_brain cut 3.0% of the brain",
                                 "T1map: voxels of 4.00 mm", "brain_ml 1400.0 outside")):
        assert out.loc[row, "qc_reasons"].startswith(start), (row, out.loc[row, "qc_reasons"])


def test_kinds_follow_the_reasons_one_each_also_below_five_sessions():
    # three sessions: no robust bounds, the similarity against the floor 0.15 (both maps
    # of row 1 below it), and row 1's Dice: three reasons, three kinds in their order
    out = qc_flags(_table(dice_template_brain=[0.95, 0.5, 0.95],
                          nmi_ndi_T1map=[0.34, 0.05, 0.33], nmi_ndi_MWFmap=[0.30, 0.04, 0.35]))
    assert out["qc_flag_kinds"].tolist() == ["", "dice;coregistration;coregistration", ""]
    reasons = out.loc[1, "qc_reasons"]
    assert reasons.startswith("Dice with the template brain mask 0.500 < 0.9; nmi_ndi_T1map "
                              "0.050 below the absolute floor 0.15")
    assert "nmi_ndi_MWFmap 0.040 below the absolute floor 0.15" in reasons


def test_flagged_exclusions_select_by_kind():
    from gamer_mril.exclusion import EXCLUDE_FLAGGED, flagged_exclusions

    out = qc_flags(_one_failure_per_row())
    default = flagged_exclusions(out, EXCLUDE_FLAGGED)
    assert default == {("00", "1"): "QC flag: " + out.loc[0, "qc_reasons"],
                       ("01", "1"): "QC flag: " + out.loc[1, "qc_reasons"]}
    assert set(flagged_exclusions(out, ["volume", "crop"])) == {("03", "1"), ("05", "1")}
    assert flagged_exclusions(out, []) == {}
    # read back from the TSV as the job reads it (every column text, empty kinds "")
    back = pd.read_csv(pd.io.common.StringIO(out.to_csv(sep="\t", index=False)), sep="\t",
                       dtype=str, keep_default_na=False)
    assert flagged_exclusions(back, EXCLUDE_FLAGGED) == default
    with pytest.raises(ValueError, match=r"unknown flag kinds \['mask'\]"):
        flagged_exclusions(out, ["dice", "mask"])
    with pytest.raises(ValueError, match="qc.tsv has no qc_flag_kinds column"):
        flagged_exclusions(out.drop(columns="qc_flag_kinds"), ["dice"], "qc.tsv")


def _participants_and_qc(tmp_path):
    table = tmp_path / "participants.tsv"
    table.write_text("subject\tsession\tage\tedss\n01\t1\t30\t2\n01\t2\t31\t2.5\n"
                     "02\t1\t40\t6\n03\t1\t50\t7\n")
    qc = tmp_path / "preprocessing_qc.tsv"
    qc.write_text("subject\tsession\tbrain_ml\tqc_flag\tqc_reasons\tqc_flag_kinds\n"
                  "01\t1\t1000\tFalse\t\t\n"
                  "01\t2\t900\tTrue\tnmi_ndi_MWFmap 0.050 below\tcoregistration\n"
                  "02\t1\t1400\tTrue\tbrain_ml 1400.0 outside\tvolume\n"
                  "03\t1\t1000\tTrue\tDice 0.5\tdice\n")
    return table, qc


def test_analysed_sessions_leave_out_flagged_sessions_and_say_by_what(tmp_path):
    import json

    from gamer_mril.exclusion import run_analysed_sessions
    from gamer_mril.inputs import load_participants

    table, qc = _participants_and_qc(tmp_path)
    out, excluded, log_file = (tmp_path / "analysed.tsv", tmp_path / "excluded.tsv",
                               tmp_path / "analysed.log")
    run_analysed_sessions(table, out, excluded, exclude={"sub-03_ses-1": "motion"},
                          exclude_flagged=["coregistration", "dice"], qc_table=qc,
                          log_file=log_file)
    kept = load_participants(out)
    assert list(zip(kept["subject"], kept["session"])) == [("01", "1"), ("02", "1")]
    doc = json.loads(out.with_name(out.name + ".json").read_text())
    # sub-03 is both listed and flagged: the user's reason; volume is not a kind asked for
    assert doc["Facts"]["Excluded"] == [
        {"subject": "01", "session": "2", "reason": "QC flag: nmi_ndi_MWFmap 0.050 below",
         "by": "qc.exclude_flagged"},
        {"subject": "03", "session": "1", "reason": "motion", "by": "qc.exclude"}]
    assert doc["Parameters"]["exclude_flagged"] == ["dice", "coregistration"]
    assert set(doc["Inputs"]) == {"table", "qc_table"}
    rows = pd.read_csv(excluded, sep="\t", dtype=str)
    assert rows.values.tolist() == [
        ["01", "2", "qc.exclude_flagged", "QC flag: nmi_ndi_MWFmap 0.050 below"],
        ["03", "1", "qc.exclude", "motion"]]
    text = log_file.read_text()
    assert ("sub-01 ses-2 left out of training and assessment (qc.exclude_flagged): QC "
            "flag: nmi_ndi_MWFmap 0.050 below") in text
    assert "2 of 4 sessions analysed (1 left out by qc.exclude, 1 by qc.exclude_flagged" in text
    # off: the QC table is not read, nothing is left out but the list
    run_analysed_sessions(table, out, excluded, exclude=[], exclude_flagged=[])
    assert len(load_participants(out)) == 4
    assert pd.read_csv(excluded, sep="\t").empty


def test_flags_that_leave_no_session_stop_naming_the_table(tmp_path):
    from gamer_mril.exclusion import run_analysed_sessions

    table, qc = _participants_and_qc(tmp_path)
    out = tmp_path / "analysed.tsv"
    with pytest.raises(ValueError, match=r"leaves no session to analyse") as err:
        run_analysed_sessions(table, out, exclude=["sub-01_ses-1"],
                              exclude_flagged=["coregistration", "dice", "volume"],
                              qc_table=qc)
    assert str(qc) in str(err.value)
    assert not out.exists()


def test_exclude_flagged_defaults_and_kinds_are_the_schemas_and_the_configs():
    import yaml

    from gamer_mril.exclusion import EXCLUDE_FLAGGED
    from gamer_mril.qc import FLAG_KINDS

    root = Path(__file__).parents[1]
    props = yaml.safe_load((root / "schemas" / "config.schema.yaml").read_text())[
        "properties"]["qc"]["properties"]["exclude_flagged"]
    config = yaml.safe_load((root / "config.yaml").read_text())
    assert props["default"] == config["qc"]["exclude_flagged"] == list(EXCLUDE_FLAGGED) == \
        ["dice", "coregistration"]
    assert props["items"]["enum"] == list(FLAG_KINDS)
