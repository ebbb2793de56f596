"""bench/localization.py: its metrics on hand-built arrays with answers worked out by hand,
and its main function end to end on a hand-built results folder and ground truth."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import import_bench

from gamer_mril import templates
from gamer_mril.layout import Session
from gamer_mril.scenario_stack import save_stack


@pytest.fixture(scope="module")
def loc():
    return import_bench("localization")


def _grid(shape=(6, 6, 6)):
    """A cerebrum of every voxel but the x = 0 slab (180 voxels) and a 2x2x2 region
    (8 voxels) inside it, plus one region voxel outside the cerebrum that must not count."""
    cerebrum = np.ones(shape, dtype=bool)
    cerebrum[0] = False
    region = np.zeros(shape, dtype=bool)
    region[2:4, 2:4, 2:4] = True
    region[0, 0, 0] = True
    return region, cerebrum


# ----------------------------------------------------------------------------- metrics

def test_mass_all_inside_the_region_is_cerebrum_over_region(loc):
    region, cerebrum = _grid()
    rel = np.zeros(region.shape)
    rel[2:4, 2:4, 2:4] = np.arange(1, 9).reshape(2, 2, 2)
    rel[4, 4, 4] = -5.0                   # negative relevance does not count
    rel[0, 5, 5] = 100.0                  # outside the cerebrum: does not count
    assert loc.mass_ratio(rel, region, cerebrum) == pytest.approx(180 / 8)


def test_mass_of_a_uniform_map_is_one_and_of_an_outside_map_zero(loc):
    region, cerebrum = _grid()
    assert loc.mass_ratio(np.ones(region.shape), region, cerebrum) == pytest.approx(1.0)
    rel = np.zeros(region.shape)
    rel[5, 5, 5] = 3.0
    assert loc.mass_ratio(rel, region, cerebrum) == 0.0
    # half the mass in the region: (1/2) / (8/180)
    rel[2, 2, 2] = 3.0
    assert loc.mass_ratio(rel, region, cerebrum) == pytest.approx(0.5 * 180 / 8)
    assert math.isnan(loc.mass_ratio(-np.ones(region.shape), region, cerebrum))


def test_pointing_game(loc):
    region, cerebrum = _grid()
    rel = np.zeros(region.shape)
    rel[3, 3, 3] = 2.0
    rel[0, 0, 0] = 50.0                   # the largest value, but outside the cerebrum
    assert loc.pointing_hit(rel, region, cerebrum) == 1.0
    rel[4, 4, 4] = 3.0                    # maximum diagonally next to the region
    assert loc.pointing_hit(rel, region, cerebrum) == 0.0
    assert loc.pointing_hit(rel, region, cerebrum, tolerance=1) == 1.0
    rel[5, 4, 4] = 4.0                    # two voxels away: missed even with tolerance
    assert loc.pointing_hit(rel, region, cerebrum, tolerance=1) == 0.0
    rel[2, 2, 2] = 4.0                    # a plateau of two maxima, one inside
    assert loc.pointing_hit(rel, region, cerebrum) == 0.5
    assert math.isnan(loc.pointing_hit(np.zeros(region.shape), region, cerebrum))


def test_pointing_chance(loc):
    region, cerebrum = _grid()
    assert loc.pointing_chance(region, cerebrum) == pytest.approx(8 / 180)
    # widened by one voxel: a 4x4x4 cube, all inside the cerebrum
    assert loc.pointing_chance(region, cerebrum, tolerance=1) == pytest.approx(64 / 180)


def test_top_recall(loc):
    region, cerebrum = _grid()
    recall, chance = loc.top_recall(region, region, cerebrum)
    assert recall == 1.0
    assert chance == pytest.approx(8 / 180)
    assert recall / chance == pytest.approx(180 / 8)
    half = np.zeros(region.shape, dtype=bool)
    half[2, 2:4, 2:4] = True              # half the region
    half[5, 5, 5] = True                  # and one voxel elsewhere
    recall, chance = loc.top_recall(half, region, cerebrum)
    assert (recall, chance) == (pytest.approx(0.5), pytest.approx(5 / 180))
    assert loc.top_recall(np.zeros(region.shape, bool), region, cerebrum) == (0.0, 0.0)


def test_heatmap_ratio(loc):
    region, cerebrum = _grid()
    assert loc.heatmap_ratio(np.full(region.shape, 0.3), region, cerebrum) == pytest.approx(1)
    heat = np.where(region, 0.8, 0.2)
    # mean in region 0.8; mean over the cerebrum (8 * 0.8 + 172 * 0.2) / 180
    assert loc.heatmap_ratio(heat, region, cerebrum) == pytest.approx(
        0.8 / ((8 * 0.8 + 172 * 0.2) / 180))


def test_rank_accuracy_by_hand(loc):
    region, cerebrum = _grid()                     # |R| = 8 in a cerebrum of 180
    rel = np.zeros(region.shape)
    inside = np.argwhere(region & cerebrum)
    # the 8 highest values: 5 region voxels and 3 elsewhere
    for v, (i, j, k) in zip(range(5), inside[:5]):
        rel[i, j, k] = 10 + v
    rel[5, 5, 5] = rel[5, 5, 4] = rel[5, 4, 5] = 20.0
    rel[1, 1, 1] = 1.0                             # 9th: below the cut
    assert loc.rank_accuracy(rel, region, cerebrum) == pytest.approx(5 / 8)
    # a constant map: every voxel tied, each counts 8/180 -> the chance
    assert loc.rank_accuracy(np.ones(region.shape), region, cerebrum) == pytest.approx(8 / 180)
    # ties at the cut: 7 above it (4 in R), 4 tied at it (2 in R), one place left
    rel = np.zeros(region.shape)
    for (i, j, k) in inside[:4]:
        rel[i, j, k] = 5.0
    rel[5, 5, 5] = rel[5, 5, 4] = rel[5, 4, 5] = 5.0
    for (i, j, k) in inside[4:6]:
        rel[i, j, k] = 2.0
    rel[4, 4, 4] = rel[4, 4, 5] = 2.0
    assert loc.rank_accuracy(rel, region, cerebrum) == pytest.approx((4 + 2 * 1 / 4) / 8)
    assert math.isnan(loc.rank_accuracy(-np.ones(region.shape), region, cerebrum))
    # the region voxel outside the cerebrum never counts
    rel = np.zeros(region.shape)
    rel[0, 0, 0] = 100.0
    for (i, j, k) in inside:
        rel[i, j, k] = 1.0
    assert loc.rank_accuracy(rel, region, cerebrum) == 1.0


def test_mass_accuracy_is_the_share(loc):
    region, cerebrum = _grid()
    rel = np.where(region, 3.0, 1.0)
    rel[0] = 50.0                                  # outside the cerebrum: not counted
    rel[5, 5, 5] = -7.0                            # negative: not counted
    # region 8 x 3 = 24; rest of the cerebrum 171 x 1 (one voxel negative)
    assert loc.mass_accuracy(rel, region, cerebrum) == pytest.approx(24 / (24 + 171))
    assert loc.mass_accuracy(rel, region, cerebrum) == pytest.approx(
        loc.mass_ratio(rel, region, cerebrum) * 8 / 180)
    assert math.isnan(loc.mass_accuracy(np.zeros(region.shape), region, cerebrum))


# ----------------------------------------------------------------------------- end to end

FULL = (12, 12, 12)
BOX = {"start": [2, 2, 2], "shape": [8, 8, 8]}
TPL_AFFINE = np.array([[2.0, 0, 0, -30], [0, 2.0, 0, -30], [0, 0, 2.0, 0], [0, 0, 0, 1]])


def _save(data, path, affine=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), path)


def _level_image(path, arrays, levels):
    save_stack({n: a.astype(np.uint8) for n, a in arrays.items()}, np.eye(4), path)
    path.with_name(path.name.replace(".nii.gz", ".json")).write_text(
        json.dumps({"Facts": {"levels": levels}}))


def _build(tmp_path, with_template_region=True):
    """Two sessions on an 8^3 cropped grid: cerebrum = all but the x = 0 slab (448 voxels),
    planted region = crop [2:4, 2:4, 2:4] (8 voxels; one more voxel lies outside the
    cerebrum). sub-01 is severe, sub-02 mild."""
    results, cohort = tmp_path / "results", tmp_path / "cohort"
    (results / "group").mkdir(parents=True)
    pd.DataFrame({"subject": ["01", "02"], "session": ["1", "1"], "label": [1, 0]}).to_csv(
        results / "group" / "predictions.tsv", sep="\t", index=False)
    planted_full = np.zeros(FULL, dtype=np.uint8)
    planted_full[4:6, 4:6, 4:6] = 1
    planted_full[2, 2, 2] = 1                       # crop (0, 0, 0): not in the cerebrum
    cerebrum = np.ones((8, 8, 8), dtype=np.uint8)
    cerebrum[0] = 0
    region = np.zeros((8, 8, 8), dtype=bool)
    region[2:4, 2:4, 2:4] = True
    # lesions: crop [6, 6, 6] and [6, 6, 7] (two voxels), one more inside the region
    lesions_full = np.zeros(FULL, dtype=np.uint8)
    lesions_full[8, 8, 8:10] = 1
    lesions_full[4, 4, 4] = 1
    for sub in ("01", "02"):
        s = Session(results, sub, "1")
        for name, mask in (("planted", planted_full), ("lesions", lesions_full),
                           ("brain", np.ones(FULL, np.uint8))):
            _save(mask, cohort / "ground_truth" / f"sub-{sub}" / "ses-1"
                  / f"sub-{sub}_ses-1_space-NDI_desc-{name}_mask.nii.gz")
        (results / f"sub-{sub}" / "ses-1" / "anat").mkdir(parents=True)
        (results / f"sub-{sub}" / "ses-1" / "xai").mkdir(parents=True)
        Path(s.crop_box).write_text(json.dumps(
            {"CropBox": BOX, "FullShape": list(FULL), "FullAffine": np.eye(4).tolist()}))
        _save(cerebrum, Path(s.cerebrum))
    one, two = Session(results, "01", "1"), Session(results, "02", "1")
    # sub-01, scenario 1: qT1 points elsewhere, MWF only in the region, NDI uniform
    rel = np.zeros((8, 8, 8, 3), dtype=np.float32)
    rel[6, 6, 6, 0] = 5.0
    rel[2:4, 2:4, 2:4, 1] = np.arange(1, 9).reshape(2, 2, 2)
    rel[..., 2] = 1.0
    # its level image: the top-40 mask is the region in every volume (values 30 and 40),
    # voxels of value 50 are in the top-50 mask only
    lvl = np.zeros((8, 8, 8, 3), dtype=np.uint8)
    lvl[5:8] = 50
    lvl[2:4, 2:4, 2:4] = 40
    lvl[2, 2:4, 2:4] = 30
    _level_image(Path(one.qmasks), {1: lvl}, list(range(10, 100, 10)))
    # sub-01, scenario 3 (combined): maximum next to the region, the region 1, else 0
    comb = np.zeros((8, 8, 8), dtype=np.float32)
    comb[region] = 1.0
    comb[4, 2, 2] = 10.0
    save_stack({1: rel, 3: comb}, np.eye(4), Path(one.relmaps("NDIcrop")))
    # sub-02: uniform maps; level images without level 40 (to be recomputed, not read)
    save_stack({1: np.ones((8, 8, 8, 3), dtype=np.float32),
                3: np.ones((8, 8, 8), dtype=np.float32)}, np.eye(4),
               Path(two.relmaps("NDIcrop")))
    _level_image(Path(two.qmasks), {1: np.where(region[..., None], 30, 0) * np.ones(3)},
                 [10, 20, 30])
    # template space: a 10^3 2 mm grid in the left deep white matter, no cerebellum in it
    tpl_region = np.zeros((10, 10, 10), dtype=np.uint8)
    tpl_region[2:4, 2:4, 2:4] = 1
    if with_template_region:
        _save(tpl_region, cohort / "ground_truth"
              / "space-MNI152NLin2009cAsym_res-2_desc-planted_mask.nii.gz", TPL_AFFINE)
    _save(np.zeros((10, 10, 10), np.uint8), results / "templates"
          / "tpl-MNI152NLin2009cAsym_res-01_desc-cerebellum_mask.nii.gz", TPL_AFFINE)
    heat = results / "group" / "heatmaps"
    _save(tpl_region.astype(np.float32), heat
          / "tpl-MNI152NLin2009cAsym_scenario-03_group-severe_desc-top40_heatmap.nii.gz",
          TPL_AFFINE)
    h4 = np.zeros((10, 10, 10, 3), dtype=np.float32)
    h4[..., 0] = 0.5
    h4[..., 1] = tpl_region
    _save(h4, heat / "tpl-MNI152NLin2009cAsym_scenario-01_group-all_desc-top40_heatmap.nii.gz",
          TPL_AFFINE)
    return results, cohort


def test_main_end_to_end(loc, tmp_path, capsys):
    # precondition of the heatmap figures: the tiny template grid lies inside the brain
    brain = np.asarray(templates.template_brain_mask(2).dataobj)
    ijk = np.linalg.solve(templates.template_brain_mask(2).affine, TPL_AFFINE)[:3, 3]
    i, j, k = (int(round(v)) for v in ijk)
    assert brain[i:i + 10, j:j + 10, k:k + 10].all()

    results, cohort = _build(tmp_path)
    out = tmp_path / "table.tsv"
    assert loc.main([str(results), str(cohort), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "severe sessions (1)" in printed and "all sessions (2)" in printed
    t = pd.read_csv(out, sep="\t")
    assert list(t.columns) == loc.COLUMNS + ["share_lesions", "share_lesions_chance"]
    # two groups x (scenario 1: three maps, scenario 3: one)
    assert len(t) == 8
    row = {(r.sessions, r.scenario, r.map): r for r in t.itertuples()}
    c_over_r = 448 / 8

    sev = row[("severe", 1, "MWF")]
    assert sev.n_sessions == 1
    assert sev.mass_ratio == pytest.approx(c_over_r, rel=1e-5)
    assert sev.pointing == 1.0
    assert sev.pointing_chance == pytest.approx(8 / 448, rel=1e-5)
    assert sev.mask_source == "read"
    assert sev.recall_ratio == pytest.approx(c_over_r, rel=1e-5)
    assert sev.rank_accuracy == 1.0 and sev.mass_accuracy == pytest.approx(1.0)
    assert sev.rank_chance == pytest.approx(8 / 448, rel=1e-5) and sev.share_lesions == 0.0
    q = row[("severe", 1, "qT1")]
    assert (q.mass_ratio, q.pointing, q.pointing_tol1) == (0.0, 0.0, 0.0)
    # qT1's one voxel of relevance lies on a lesion (crop [6, 6, 6]), outside the region;
    # the other 7 of the top 8 are drawn from the 447 voxels tied at 0, the region's 8 among them
    assert (q.mass_accuracy, q.share_lesions) == (0.0, 1.0)
    assert q.rank_accuracy == pytest.approx(7 / 447, rel=1e-5)
    assert q.share_lesions_chance == pytest.approx(2 / 448, rel=1e-5)
    assert q.recall_ratio == pytest.approx(c_over_r, rel=1e-5)   # the mask read, not its map
    n = row[("severe", 1, "NDI")]
    assert n.mass_ratio == pytest.approx(1.0, rel=1e-5)
    assert n.rank_accuracy == pytest.approx(8 / 448, rel=1e-5)
    assert n.share_lesions == pytest.approx(2 / 448, rel=1e-5)
    assert n.pointing == pytest.approx(8 / 448, rel=1e-5)         # plateau over the cerebrum
    c = row[("severe", 3, "combined")]
    assert c.mass_ratio == pytest.approx((8 / 18) / (8 / 448), rel=1e-5)
    assert (c.pointing, c.pointing_tol1) == (0.0, 1.0)
    assert c.mask_source == "computed"
    # ties at the threshold are kept: the 40th percentile mask holds all 9 positive voxels
    assert c.recall_ratio == pytest.approx(1 / (9 / 448), rel=1e-5)

    # all sessions: sub-02 is uniform everywhere, its mask recomputed (its level image lacks 40)
    a = row[("all", 1, "MWF")]
    assert a.n_sessions == 2
    assert a.mass_ratio == pytest.approx((c_over_r + 1) / 2, rel=1e-5)
    assert a.recall_ratio == pytest.approx((c_over_r + 1) / 2, rel=1e-5)
    assert a.mask_source == "computed/read"

    # heatmaps: severe group for the severe rows, all for all; 1000 / 8 voxels
    assert row[("severe", 3, "combined")].heatmap_ratio == pytest.approx(1000 / 8, rel=1e-5)
    assert math.isnan(row[("all", 3, "combined")].heatmap_ratio)
    assert row[("all", 1, "MWF")].heatmap_ratio == pytest.approx(1000 / 8, rel=1e-5)
    assert row[("all", 1, "qT1")].heatmap_ratio == pytest.approx(1.0, rel=1e-5)
    assert math.isnan(row[("all", 1, "NDI")].heatmap_ratio)    # an empty heatmap
    assert math.isnan(row[("severe", 1, "MWF")].heatmap_ratio)  # no such heatmap
    assert set(t["heatmap_level"].dropna()) == {40}


def test_main_says_when_the_region_is_not_in_template_space(loc, tmp_path, capsys):
    results, cohort = _build(tmp_path, with_template_region=False)
    out = tmp_path / "table.tsv"
    assert loc.main([str(results), str(cohort), "--out", str(out)]) == 0
    assert "no planted region in template space" in capsys.readouterr().out
    t = pd.read_csv(out, sep="\t")
    assert t["heatmap_ratio"].isna().all()
    assert t["mass_ratio"].notna().any()
