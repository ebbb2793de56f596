"""gamer_mril.registration: the ANTsPy import leaves out the subpackages the workflow never
calls (everything it calls is there, a later import of one gets the real one, the lazy
statistics module answers as the real one); masks
packed as bits resample exactly as one resampling per mask."""
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("ants")

PROBE = r"""
import sys
from gamer_mril.registration import ANTS_UNUSED, _ants
ants = _ants()
used = ["registration", "apply_transforms", "from_nibabel_nifti", "to_nibabel_nifti",
        "read_transform", "image_read", "from_numpy", "get_mask"]
missing = [f for f in used if not callable(getattr(ants, f, None))]
assert not missing, missing
heavy = [m for m in ("matplotlib", "sklearn", "statsmodels", "scipy.stats") if m in sys.modules]
assert not heavy, heavy
assert not [n for n in sys.modules if n.split(".")[:2] in (["ants", u] for u in ANTS_UNUSED)]
assert "ants.math.quantile" not in sys.modules
assert callable(ants.image_similarity)
import ants.plotting
assert callable(ants.plotting.plot)
# the lazily imported statistics: the same answer as the real module's, which is loaded
import numpy as np
img = ants.from_numpy(np.arange(24, dtype=np.float32).reshape(2, 3, 4))
q = ants.quantile(img, 0.5)
import ants.math.quantile as real
assert "statsmodels" in sys.modules
assert q == real.quantile(img, 0.5) and 11 <= q <= 12, q
print("ok")
"""


def test_ants_import_leaves_out_unused_subpackages_only():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_pack_masks_round_trip_over_several_volumes():
    from gamer_mril.registration import MASK_BITS, pack_masks, unpack_masks

    rng = np.random.default_rng(1)
    masks = rng.random((MASK_BITS + 6, 4, 5, 6)) < 0.4
    packed = pack_masks(masks)
    assert packed.shape == (2, 4, 5, 6) and packed.dtype == np.float32
    assert packed.max() < 2 ** MASK_BITS
    np.testing.assert_array_equal(unpack_masks(packed, len(masks)), masks)
    # voxel (0,0,0): the value is the sum of 2**k over the first volume's masks holding it
    assert packed[0, 0, 0, 0] == sum(2 ** k for k in range(MASK_BITS) if masks[k, 0, 0, 0])


def test_warp_masks_equals_one_nearest_neighbour_resampling_per_mask(tmp_path):
    """All masks through one packed resampling = each mask resampled on its own."""
    import ants

    from gamer_mril import registration as reg

    rng = np.random.default_rng(2)
    shape = (12, 14, 10)
    affine = np.diag([2.0, 2.0, 2.5, 1.0])
    affine[:3, 3] = [-11.0, -13.0, -12.0]
    masks = rng.random((27,) + shape) < 0.3
    fixed = reg.to_ants(np.zeros((17, 15, 13), np.float32), np.diag([1.7, 1.9, 2.1, 1.0]))
    # a rotation and shift, written as ANTs writes transforms
    tx = ants.create_ants_transform(transform_type="AffineTransform", dimension=3,
                                    matrix=[[0.98, -0.17, 0.0], [0.17, 0.98, 0.05],
                                            [0.0, -0.05, 1.0]], translation=[1.3, -0.7, 0.4])
    path = str(tmp_path / "tx.mat")
    ants.write_transform(tx, path)
    together = reg.warp_masks(fixed, masks, affine, [path])
    alone = np.stack([reg.apply_to_volumes(fixed, m[None].astype(np.float32), affine, [path],
                                           "nearestNeighbor")[0] > 0.5 for m in masks])
    assert together.shape == alone.shape == (27, 17, 15, 13)
    assert alone.any() and not alone.all()
    np.testing.assert_array_equal(together, alone)


# ------------------------------------------- maps too far apart for co-registration


def _blob(shape=(48, 54, 48)):
    """A head-sized blob (2 mm voxels: 80 x 88 x 76 mm)."""
    from scipy import ndimage

    x = np.zeros(shape, np.float32)
    x[4:44, 5:49, 5:43] = 1.0
    return np.clip(ndimage.gaussian_filter(x, 1.5), 0, 1).astype(np.float32)


def _session(tmp_path, shift_mm):
    """A scaled NDI and qT1 map of one session (2 mm voxels), qT1's header origin moved
    by ``shift_mm`` along x; the qT1 map's sidecar names its raw file."""
    import nibabel as nib

    from gamer_mril.io import write_sidecar

    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -30.0
    moved = affine.copy()
    moved[0, 3] += shift_mm
    ndi = tmp_path / "sub-01_ses-1_desc-scaled_ndimap.nii.gz"
    qt1 = tmp_path / "sub-01_ses-1_desc-scaled_T1map.nii.gz"
    nib.save(nib.Nifti1Image(_blob(), affine), ndi)
    nib.save(nib.Nifti1Image(_blob(), moved), qt1)
    raw = tmp_path / "raw" / "sub-01_ses-1_T1map.nii.gz"
    raw.parent.mkdir()
    nib.save(nib.Nifti1Image(_blob(), moved), raw)
    write_sidecar(qt1, rule="scale_map", inputs={"image": raw})
    return ndi, qt1, raw


@pytest.mark.parametrize("shift,words", [
    (300.0, "do not overlap in scanner space"),
    (80.0, "80.0 mm apart in scanner space, more than preprocessing.max_centre_distance_mm"),
])
def test_misaligned_maps_stop_before_ants(tmp_path, monkeypatch, shift, words):
    """qT1 300 mm (no overlap) or 80 mm from NDI: rule coregister_to_ndi stops before
    ANTs is called, naming the session, both files, the distance and what to check,
    and leaves no transform behind."""
    from gamer_mril import preprocessing_jobs, registration
    from gamer_mril.errors import InputError

    def no_ants(*args, **kwargs):
        raise AssertionError("ANTs must not be called")

    monkeypatch.setattr(registration, "register", no_ants)
    ndi, qt1, raw = _session(tmp_path, shift)
    out = {"qT1": tmp_path / "from-qT1_to-NDI_xfm.mat"}
    with pytest.raises(InputError) as e:
        preprocessing_jobs.run_coregister_to_ndi(ndi, {"qT1": qt1}, out, coregistration="rigid",
                                            seed=1, subject="01", session="1")
    msg = str(e.value)
    assert msg.startswith("sub-01 ses-1: ") and words in msg, msg
    assert str(raw) in msg and str(ndi) in msg and f"{shift:.1f} mm" in msg
    assert "qform" in msg and "sform" in msg and "belong to sub-01 ses-1" in msg
    assert not out["qT1"].exists()
    assert not list(tmp_path.glob(".work-*"))


def test_aligned_maps_pass_the_check(tmp_path):
    from gamer_mril.alignment import check_alignment

    ndi, qt1, _ = _session(tmp_path, 12.0)
    facts = check_alignment(ndi, qt1, "qT1", "sub-01 ses-1")
    assert facts["CentreDistance_mm"] == pytest.approx(12.0, abs=0.01)


def test_an_ants_error_gets_the_projects_line_above_it(tmp_path, monkeypatch):
    """An error raised inside ANTs during co-registration is re-raised naming the session,
    the step and both files, ANTs' own message kept below."""
    import ants

    from gamer_mril import preprocessing_jobs, registration
    from gamer_mril.errors import RegistrationError

    def failing(fixed, moving, transform, workdir, metric="mattes", **kwargs):
        return ants.registration(fixed=fixed, moving=moving, type_of_transform="NoSuch")

    monkeypatch.setattr(registration, "register", failing)
    ndi, qt1, _ = _session(tmp_path, 5.0)
    out = {"qT1": tmp_path / "from-qT1_to-NDI_xfm.mat"}
    with pytest.raises(RegistrationError) as e:
        preprocessing_jobs.run_coregister_to_ndi(ndi, {"qT1": qt1}, out, coregistration="rigid",
                                            seed=1, subject="01", session="1")
    first, *rest = str(e.value).splitlines()
    assert first.startswith("sub-01 ses-1: the co-registration of qT1 to NDI (rule "
                            "coregister_to_ndi) failed inside ANTs")
    assert str(qt1) in first and str(ndi) in first
    assert rest[0] == "    ValueError: " + rest[0].split("ValueError: ", 1)[1]
    assert "NoSuch" in "\n".join(rest) or "type_of_transform" in "\n".join(rest)
    assert e.value.__suppress_context__


def test_any_step_names_an_ants_error(tmp_path):
    """An ANTs error that no step named reaches the user through gamer_mril.jobs.step
    with the session, the rule and the job's files in the first line."""
    import ants

    from gamer_mril.errors import RegistrationError
    from gamer_mril.jobs import step

    img = ants.from_numpy(_blob())
    with pytest.raises(RegistrationError) as e:
        with step("register_to_template", inputs={"qT1": str(tmp_path / "t1.nii.gz")},
                  outputs=[tmp_path / "x.mat"], subject="01", session="1"):
            ants.registration(fixed=img, moving=img, type_of_transform="NoSuch")
    first = str(e.value).splitlines()[0]
    assert first.startswith("sub-01 ses-1: rule register_to_template failed inside ANTs")
    assert str(tmp_path / "t1.nii.gz") in first


def test_qt1_coregistration_leaves_a_wrong_optimum_through_the_rotation_search(tmp_path):
    """A constructed session whose single start fails: the qT1 map's header rotated 60
    degrees about the left-right axis (as a wrong qform would). From the centres alone
    rigid mutual information stops in a wrong rotation; the rotation search's start
    reaches the true one, is kept, and every start's value is in the facts."""
    import nibabel as nib

    from gamer_mril import preprocessing
    from gamer_mril.synthetic import generate_cohort, raw_path

    generate_cohort(tmp_path / "c", n_subjects=1, followup_fraction=0.0, severe_fraction=0.0,
                    scale=3.0, seed=3, log=lambda *_: None)
    raw = tmp_path / "c" / "rawdata"
    ndi = nib.load(raw_path(raw, "001", "1", "NDI"))
    qt1 = nib.load(raw_path(raw, "001", "1", "qT1"))
    paths = {}
    for name, img in (("NDI", ndi), ("qT1", qt1)):
        data = np.nan_to_num(img.get_fdata(dtype=np.float32))
        paths[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data / data.max(), img.affine), paths[name])
    # the header rotated about the qT1 grid's centre by 60 degrees about x
    a = np.deg2rad(60)
    rot = np.eye(4)
    rot[1:3, 1:3] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    centre = qt1.affine @ np.r_[(np.array(qt1.shape[:3]) - 1) / 2, 1]
    shift = np.eye(4)
    shift[:3, 3] = centre[:3]
    rotated = shift @ rot @ np.linalg.inv(shift) @ qt1.affine
    moved = tmp_path / "qT1_rotated.nii.gz"
    nib.save(nib.Nifti1Image(nib.load(paths["qT1"]).get_fdata(dtype=np.float32), rotated),
             moved)

    # the truth: the unrotated pair's registration (the generator poses qT1 a few
    # degrees off NDI) followed by the header's rotation; Matrix_RAS maps NDI space to
    # the qT1 map's (ITK's fixed-to-moving direction)
    base = preprocessing.step_coregister(paths["NDI"], paths["qT1"], tmp_path / "base.mat",
                                         "rigid", tmp_path / "w0")
    truth = rot[:3, :3] @ np.asarray(base["Matrix_RAS"])[:3, :3]

    def angle_to_truth(facts):
        m = np.asarray(facts["Matrix_RAS"])[:3, :3]
        c = (np.trace(m.T @ truth) - 1) / 2
        return np.degrees(np.arccos(np.clip(c, -1, 1)))

    single = preprocessing.step_coregister(paths["NDI"], moved, tmp_path / "one.mat",
                                           "rigid", tmp_path / "w1")
    several = preprocessing.step_coregister(paths["NDI"], moved, tmp_path / "all.mat",
                                            "rigid", tmp_path / "w2", search=True)
    assert set(single["MetricByStart"]) == {"centre"}
    assert set(several["MetricByStart"]) == {"centre", "rotation search"}
    assert several["Start"] == "rotation search"
    assert several["MetricByStart"]["rotation search"] < several["MetricByStart"]["centre"]
    assert angle_to_truth(single) > 20, angle_to_truth(single)     # the wrong optimum
    assert angle_to_truth(several) < 2, angle_to_truth(several)
