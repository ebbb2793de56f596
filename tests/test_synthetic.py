"""The synthetic cohort generator: table, grids, tissue values, planted effect."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from gamer_mril.synthetic import PROTOCOL, contrast_grid, effect_strength, generate_cohort, make_table, raw_path


def test_table_shape_and_values():
    t = make_table(400, 0.4, 0.25, seed=3)
    first = t[t.session == "1"]
    assert len(first) == 400 and first.subject.is_unique
    assert abs((first.edss >= 5).mean() - 0.25) < 0.01
    assert abs((t.session == "2").sum() / 400 - 0.4) < 0.01
    assert first.age.between(20, 70).all()
    assert ((t.edss * 2) % 1 == 0).all() and t.edss.between(0, 10).all()
    follow = t[t.session == "2"].set_index("subject")
    base = first.set_index("subject").loc[follow.index]
    np.testing.assert_allclose(follow.age - base.age, 2.0)
    assert (follow.edss >= base.edss).all()


def test_a_larger_cohort_extends_a_smaller_one():
    small, large = make_table(20, 0.4, 0.25, seed=1), make_table(30, 0.4, 0.25, seed=1)
    pd.testing.assert_frame_equal(small, large[large.subject <= "020"].reset_index(drop=True))


def test_effect_strength():
    assert effect_strength(0) == 0 and effect_strength(2) == 0 and effect_strength(4) == 0.5
    assert effect_strength(5) == 0.75 and effect_strength(6) == 1 and effect_strength(9) == 1


@pytest.mark.parametrize("contrast", ["qT1", "MWF", "NDI"])
def test_grids_follow_the_protocol(contrast):
    shape, affine = contrast_grid(contrast, 2.0)
    voxel, shape1 = PROTOCOL[contrast]
    np.testing.assert_allclose(np.diag(affine)[:3], np.array(voxel) * 2)
    assert shape == tuple(int(np.ceil(n / 2)) for n in shape1)
    centre = affine[:3, :3] @ ((np.array(shape) - 1) / 2) + affine[:3, 3]
    np.testing.assert_allclose(centre, 0, atol=1e-9)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_cohort(root, n_subjects=2, followup_fraction=0.0, severe_fraction=0.5, scale=3.0,
                    seed=11, log=lambda *_: None)
    return root


def test_tissue_values_are_realistic(cohort):
    table = pd.read_csv(cohort / "rawdata" / "participants.tsv", sep="\t", dtype=str)
    sub, ses = table.subject[0], table.session[0]
    gt = cohort / "ground_truth" / f"sub-{sub}" / f"ses-{ses}"
    brain = np.asarray(nib.load(gt / f"sub-{sub}_ses-{ses}_space-NDI_desc-brain_mask.nii.gz").dataobj) > 0
    ndi = nib.load(raw_path(cohort / "rawdata", sub, ses, "NDI")).get_fdata()
    inside = ndi[brain]
    # white matter (NDI ~0.6) and grey matter (~0.45) dominate the brain; CSF ~0
    assert 0.35 < np.median(inside) < 0.65
    assert np.percentile(inside, 5) < 0.3  # CSF (0), blurred by 5.4 mm partial volume
    qt1 = nib.load(raw_path(cohort / "rawdata", sub, ses, "qT1"))
    qbrain = np.asarray(nib.load(gt / f"sub-{sub}_ses-{ses}_space-qT1_desc-brain_mask.nii.gz").dataobj) > 0
    q = qt1.get_fdata()[qbrain]
    assert 800 < np.percentile(q, 20) < 1100  # white matter, ~850 ms
    assert q.max() > 3000  # CSF (ventricles) above 3000 ms
    mwf = nib.load(raw_path(cohort / "rawdata", sub, ses, "MWF")).get_fdata()
    assert 0 <= mwf.min() and mwf.max() < 0.35
    # each contrast lives in its own grid
    assert len({nib.load(raw_path(cohort / "rawdata", sub, ses, c)).shape for c in ("qT1", "MWF", "NDI")}) == 3


def test_ground_truth_beside_the_cohort(cohort):
    truth = pd.read_csv(cohort / "ground_truth" / "truth.tsv", sep="\t", dtype={"subject": str})
    assert len(truth) == 2
    for c in ("qT1", "MWF", "NDI"):
        pose = np.array(json.loads(truth[f"pose_{c}"][0]))
        np.testing.assert_allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-5)
    assert (cohort / "ground_truth" / "space-MNI152NLin2009cAsym_res-2_desc-planted_mask.nii.gz").exists()


def test_effect_scale_changes_only_the_planted_region(tmp_path):
    """The same cohort with the planted effect at full, half and no strength: a map
    differs only where the region is, by a change proportional to the scale."""
    maps = {}
    for scale in (1.0, 0.5, 0.0):
        root = tmp_path / f"e{scale}"
        table = generate_cohort(root, n_subjects=2, followup_fraction=0.0,
                                severe_fraction=0.5, scale=3.0, seed=11,
                                log=lambda *_: None, effect_scale=scale)
        maps[scale] = {(r.subject, r.session): nib.load(
            raw_path(root / "rawdata", r.subject, r.session, "MWF")).get_fdata()
            for r in table.itertuples()}
    edss = dict(zip(zip(table.subject, table.session), table.edss))
    for key, full in maps[1.0].items():
        none, half = maps[0.0][key], maps[0.5][key]
        if effect_strength(edss[key]) == 0:
            np.testing.assert_array_equal(full, none)
            continue
        changed = np.abs(full - none) > 1e-6
        assert changed.any() and changed.mean() < 0.2      # a focal region only
        assert (full[changed] < none[changed]).all()       # MWF falls
        # half the scale, half the change (a few voxels clipped at 0 excepted)
        close = np.isclose(half[changed] - none[changed],
                           (full[changed] - none[changed]) / 2, atol=1e-4)
        assert close.mean() > 0.99
    with pytest.raises(ValueError, match="effect_scale"):
        generate_cohort(tmp_path / "bad", n_subjects=1, effect_scale=-1, log=lambda *_: None)


def test_a_ball_region_moves_the_effect(tmp_path):
    """``region=(x, y, z, r)``: the planted mask is the white matter of that ball (one
    side, about its volume), and the maps change there, not in the tracts."""
    from gamer_mril import templates
    from gamer_mril.phantom import planted_region

    ball = (24.0, 20.0, 24.0, 9.0)
    img = planted_region(2, ball)
    mask = np.asarray(img.dataobj) > 0
    ijk = np.argwhere(mask)
    xyz = nib.affines.apply_affine(img.affine, ijk)
    assert (np.linalg.norm(xyz - ball[:3], axis=1) <= 9.0).all()
    assert (xyz[:, 0] > 0).all()                               # one side only
    wm = np.asarray(templates.template_tissue("WM", 2).dataobj)
    assert (wm[mask] > 0.3).all()
    volume = mask.sum() * 8.0                                   # 2 mm voxels, mm3
    assert 0.3 * 3054 < volume <= 1.1 * 3054    # 4/3 pi 9^3 = 3054 mm3, on a 2 mm grid
    assert not (mask & (np.asarray(planted_region(2).dataobj) > 0)).any()
    with pytest.raises(ValueError, match="no white matter"):
        planted_region(2, (0.0, 0.0, 200.0, 5.0))

    maps = {}
    for scale in (1.0, 0.0):
        root = tmp_path / f"e{scale}"
        table = generate_cohort(root, n_subjects=2, followup_fraction=0.0, severe_fraction=0.5,
                                scale=3.0, seed=11, log=lambda *_: None, effect_scale=scale,
                                region=ball)
        maps[scale] = {(r.subject, r.session): nib.load(
            raw_path(root / "rawdata", r.subject, r.session, "NDI")).get_fdata()
            for r in table.itertuples()}
    truth = np.asarray(nib.load(tmp_path / "e1.0" / "ground_truth" /
                                "space-MNI152NLin2009cAsym_res-2_desc-planted_mask.nii.gz").dataobj)
    np.testing.assert_array_equal(truth > 0, mask)
    edss = dict(zip(zip(table.subject, table.session), table.edss))
    severe = [k for k in maps[1.0] if effect_strength(edss[k]) > 0]
    assert severe
    for key in severe:
        changed = np.abs(maps[1.0][key] - maps[0.0][key]) > 1e-6
        # a ball of ~2 cm3 of white matter in 5.4 mm voxels: a handful of voxels, falling
        assert 0 < changed.sum() < 200
        assert (maps[1.0][key][changed] <= maps[0.0][key][changed]).all()


def test_several_balls_make_one_pattern():
    """``region=[ball, ball]``: the union of the two balls' white matter, each exactly the
    single ball's mask; a malformed ball is refused."""
    from gamer_mril.phantom import balls, planted_region

    a, b = (24.0, 20.0, 24.0, 9.0), (-20.0, -40.0, 30.0, 8.0)
    both = np.asarray(planted_region(2, [a, b]).dataobj) > 0
    one, two = (np.asarray(planted_region(2, x).dataobj) > 0 for x in (a, b))
    assert one.any() and two.any() and not (one & two).any()
    np.testing.assert_array_equal(both, one | two)
    assert balls(a) == [a] and balls([a, b]) == [a, b] and balls(None) == []
    with pytest.raises(ValueError, match="x, y, z, radius"):
        balls([(1.0, 2.0, 3.0)])
    with pytest.raises(ValueError, match="positive"):
        planted_region(2, [a, (0.0, 0.0, 0.0, -1.0)])


def test_the_lesions_are_in_the_ground_truth(cohort):
    """Each session's lesion mask (NDI grid) lies inside its brain, and the NDI map is
    lower there than in the rest of the white matter (lesions lower NDI)."""
    table = pd.read_csv(cohort / "rawdata" / "participants.tsv", sep="\t", dtype=str)
    found = 0
    for sub, ses in zip(table.subject, table.session):
        gt = cohort / "ground_truth" / f"sub-{sub}" / f"ses-{ses}"
        lesions = np.asarray(nib.load(
            gt / f"sub-{sub}_ses-{ses}_space-NDI_desc-lesions_mask.nii.gz").dataobj) > 0
        brain = np.asarray(nib.load(
            gt / f"sub-{sub}_ses-{ses}_space-NDI_desc-brain_mask.nii.gz").dataobj) > 0
        assert not (lesions & ~brain).any()
        if lesions.any():
            found += 1
            ndi = nib.load(raw_path(cohort / "rawdata", sub, ses, "NDI")).get_fdata()
            assert np.median(ndi[lesions]) < np.percentile(ndi[brain], 75)
    assert found
