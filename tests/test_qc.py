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
    from gamer_mril.qc import exclusions

    assert exclusions([]) == {} and exclusions(None) == {}
    assert exclusions(["sub-01_ses-2"]) == {("01", "2"): "listed in qc.exclude"}
    assert exclusions({"sub-01_ses-2": "MWF shifted", "sub-3_ses-A": None}) == {
        ("01", "2"): "MWF shifted", ("3", "A"): "listed in qc.exclude"}
    with pytest.raises(ValueError, match="'sub-01' is not a session label"):
        exclusions(["sub-01"])


def test_check_exclusions_names_unknown_sessions_and_keeps_one():
    from gamer_mril.qc import check_exclusions

    sessions = [("01", "1"), ("02", "1")]
    check_exclusions({("01", "1"): "x"}, sessions)
    with pytest.raises(ValueError, match="sub-09_ses-1"):
        check_exclusions({("09", "1"): "x"}, sessions)
    with pytest.raises(ValueError, match="leaves no session"):
        check_exclusions({s: "x" for s in sessions}, sessions)


def test_analysed_sessions_table_and_sidecar(tmp_path):
    import json

    from gamer_mril.inputs import load_participants
    from gamer_mril.qc import run_analysed_sessions

    table = tmp_path / "participants.tsv"
    table.write_text("subject\tsession\tage\tedss\n01\t1\t30\t2\n01\t2\t31\t2.5\n"
                     "02\t1\t40\t6\n")
    out = tmp_path / "group" / "analysed_sessions.tsv"
    run_analysed_sessions(table, out, exclude={"sub-01_ses-2": "MWF shifted"})
    kept = load_participants(out)
    assert list(zip(kept["subject"], kept["session"])) == [("01", "1"), ("02", "1")]
    facts = json.loads(out.with_name(out.name + ".json").read_text())["Facts"]
    assert facts["Excluded"] == [{"subject": "01", "session": "2", "reason": "MWF shifted"}]
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
