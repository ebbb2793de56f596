"""One orientation for the network (gamer_mril.orientation and step 1): a map stored LAS,
LPS or oblique is stored RAS by the scaling step, equal to its RAS copy (exactly for a
permutation of axes, to interpolation for an oblique grid), every voxel at its world
position."""
import nibabel as nib
import numpy as np
import pytest
from nibabel.processing import resample_from_to

from gamer_mril.orientation import axis_aligned_grid, axis_codes, obliquity_deg, to_ras


def _flipped(data, affine, axes):
    """The same image stored with the voxel axes ``axes`` reversed (world unchanged)."""
    flip = np.eye(4)
    for a in axes:
        flip[a, a] = -1
        flip[a, 3] = data.shape[a] - 1
    return np.flip(data, axis=axes).copy(), affine @ flip


def _blob(shape=(20, 24, 18)):
    """A smooth asymmetric volume in [0, 0.9] (no two axes alike)."""
    i, j, k = np.indices(shape, dtype=np.float32)
    centre = np.array([8.0, 13.0, 7.0])
    r2 = ((i - centre[0]) / 5) ** 2 + ((j - centre[1]) / 7) ** 2 + ((k - centre[2]) / 4) ** 2
    return (0.9 * np.exp(-r2 / 2) * (1 + 0.1 * np.sin(i / 3))).astype(np.float32) / 1.1


RAS_AFFINE = np.array([[2.0, 0, 0, -20], [0, 2.0, 0, -24], [0, 0, 2.5, -10], [0, 0, 0, 1]])


def test_axis_codes_and_obliquity_by_hand():
    assert axis_codes(RAS_AFFINE) == "RAS"
    _, las = _flipped(np.zeros((3, 4, 5)), RAS_AFFINE, (0,))
    assert axis_codes(las) == "LAS" and obliquity_deg(las) == 0
    a = np.deg2rad(20)
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    assert obliquity_deg(rot @ RAS_AFFINE) == pytest.approx(20, abs=1e-9)


@pytest.mark.parametrize("axes, codes", [((0,), "LAS"), ((0, 1), "LPS"), ((2,), "RAI")])
def test_a_permuted_map_becomes_its_ras_copy_exactly(axes, codes):
    data = _blob()
    stored, affine = _flipped(data, RAS_AFFINE, axes)
    assert axis_codes(affine) == codes
    out, out_affine, facts = to_ras(stored, affine, resample_oblique=True)
    np.testing.assert_array_equal(out, data)
    np.testing.assert_allclose(out_affine, RAS_AFFINE, atol=1e-12)
    assert facts == {"StoredOrientation": codes, "Orientation": "RAS",
                     "StoredObliquity_deg": 0.0, "ResampledToAxisAligned": False}


def test_axis_aligned_grid_holds_every_corner():
    a = np.deg2rad(30)
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    affine = rot @ RAS_AFFINE
    shape, grid = axis_aligned_grid((10, 10, 4), affine)
    assert obliquity_deg(grid) == 0 and np.allclose(nib.affines.voxel_sizes(grid), [2, 2, 2.5])
    corners = np.array(np.meshgrid([0, 9], [0, 9], [0, 3], indexing="ij")).reshape(3, -1).T
    vox = nib.affines.apply_affine(np.linalg.inv(grid), nib.affines.apply_affine(affine,
                                                                                 corners))
    assert (vox > -1e-6).all() and (vox < np.array(shape) - 1 + 1e-6).all()


def test_an_oblique_ndi_grid_reaches_the_ras_copy_to_interpolation():
    """The RAS image resampled onto a grid tilted 20 degrees (as a tilted slab is stored)
    comes back axis-aligned, and at the RAS copy's voxels its values are the copy's to
    interpolation; without resample_oblique the grid is only reordered."""
    data = _blob()
    ras = nib.Nifti1Image(data, RAS_AFFINE)
    a = np.deg2rad(20)
    rot = np.eye(4)
    rot[1:3, 1:3] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    centre = nib.affines.apply_affine(RAS_AFFINE, (np.array(data.shape) - 1) / 2)
    about = np.eye(4)
    about[:3, 3] = centre
    tilted_affine = about @ rot @ np.linalg.inv(about) @ RAS_AFFINE
    tilted = resample_from_to(ras, (data.shape, tilted_affine), order=1)
    stored, stored_affine = _flipped(np.asarray(tilted.dataobj), tilted_affine, (0,))

    kept, kept_affine, facts = to_ras(stored, stored_affine, resample_oblique=False)
    assert facts["ResampledToAxisAligned"] is False and axis_codes(kept_affine) == "RAS"
    assert obliquity_deg(kept_affine) == pytest.approx(20, abs=1e-6)

    out, out_affine, facts = to_ras(stored, stored_affine, resample_oblique=True)
    assert facts["StoredOrientation"] == "LAS" and facts["Orientation"] == "RAS"
    assert facts["ResampledToAxisAligned"] is True
    assert facts["StoredObliquity_deg"] == pytest.approx(20, abs=1e-3)
    assert obliquity_deg(out_affine) == 0
    back = np.asarray(resample_from_to(nib.Nifti1Image(out, out_affine), ras,
                                       order=1).dataobj)
    # the voxels at least two voxels inside both fields of view (the tilted copy holds 0
    # where its grid leaves the RAS copy's)
    vox = nib.affines.apply_affine(np.linalg.inv(tilted_affine),
                                   nib.affines.apply_affine(RAS_AFFINE, np.indices(
                                       data.shape).reshape(3, -1).T)).reshape(*data.shape, 3)
    in_view = ((vox >= 2) & (vox <= np.array(data.shape) - 3)).all(-1)
    core = np.zeros(data.shape, dtype=bool)
    core[2:-2, 2:-2, 2:-2] = True
    inside = in_view & core & (data > 0.05)
    assert inside.sum() > 1000
    assert np.abs(back[inside] - data[inside]).max() < 0.04
    assert np.corrcoef(back[inside], data[inside])[0, 1] > 0.99


def test_the_scaling_step_stores_every_map_ras(tmp_path):
    """Step 1 on an NDI map stored LPS writes exactly what it writes for the RAS copy,
    and its sidecar facts say how the map was stored."""
    from gamer_mril.preprocessing import step_scale

    data = _blob()
    stored, affine = _flipped(data, RAS_AFFINE, (0, 1))
    outs = {}
    for name, (d, a) in {"ras": (data, RAS_AFFINE), "lps": (stored, affine)}.items():
        nib.save(nib.Nifti1Image(d, a), tmp_path / f"{name}.nii.gz")
        facts = step_scale(tmp_path / f"{name}.nii.gz", tmp_path / f"{name}_scaled.nii.gz",
                           "NDI", "fraction", "sub-01 ses-1")
        outs[name] = (nib.load(tmp_path / f"{name}_scaled.nii.gz"), facts)
    np.testing.assert_array_equal(outs["lps"][0].get_fdata(), outs["ras"][0].get_fdata())
    np.testing.assert_allclose(outs["lps"][0].affine, outs["ras"][0].affine, atol=1e-6)
    assert outs["lps"][1]["StoredOrientation"] == "LPS"
    assert outs["ras"][1]["StoredOrientation"] == "RAS"
    assert outs["lps"][1]["Orientation"] == outs["ras"][1]["Orientation"] == "RAS"


@pytest.mark.parametrize("axes", [(0,), (0, 1)])
def test_the_network_input_of_a_session_stored_otherwise_is_the_ras_copys(tmp_path, axes):
    """Steps 1 and 5 on an NDI map stored LAS or LPS, its brain mask made in the scaled
    grid: the cropped array the network reads, and its affine, are the RAS copy's."""
    from gamer_mril.preprocessing import step_crop, step_scale

    data = _blob((30, 34, 26))
    stored, affine = _flipped(data, RAS_AFFINE, axes)
    crops = {}
    for name, (d, a) in {"ras": (data, RAS_AFFINE), "other": (stored, affine)}.items():
        raw, scaled = tmp_path / f"{name}.nii.gz", tmp_path / f"{name}_scaled.nii.gz"
        nib.save(nib.Nifti1Image(d, a), raw)
        step_scale(raw, scaled, "NDI", "fraction", "sub-01 ses-1")
        img = nib.load(scaled)
        mask = tmp_path / f"{name}_mask.nii.gz"
        nib.save(nib.Nifti1Image((img.get_fdata() > 0.1).astype(np.uint8), img.affine), mask)
        out = tmp_path / f"{name}_crop.nii.gz"
        step_crop({"NDI": scaled}, mask, (21, 29, 17), {"NDI": out},
                  tmp_path / f"{name}_cropmask.nii.gz", tmp_path / f"{name}_box.json", {})
        crops[name] = nib.load(out)
    np.testing.assert_array_equal(crops["other"].get_fdata(), crops["ras"].get_fdata())
    np.testing.assert_allclose(crops["other"].affine, crops["ras"].affine, atol=1e-6)
    assert crops["ras"].get_fdata().max() > 0.5          # the crop holds the blob


@pytest.mark.parametrize("axes", [(0,), (0, 1)])
def test_relevance_maps_back_to_the_stored_grid_and_to_the_template(tmp_path, axes):
    """A session stored LAS or LPS, through steps 1 and 5 as the workflow runs them: a
    relevance blob put at the network input's brightest voxel, carried back to the NDI
    grid as the relevance job does (crop box file, uncrop), lies on the stored file's
    brightest voxel when resampled onto the stored grid; carried to a template through
    an ANTs affine (warp_masks_to_template, as the top-N masks are), its centre lands
    where the affine sends that voxel's world position."""
    import ants

    from gamer_mril.assessment.heatmaps import warp_masks_to_template
    from gamer_mril.explain import read_crop_box
    from gamer_mril.preprocessing import step_crop, step_scale
    from gamer_mril.registration import read_affine_xfm
    from gamer_mril.spaces import uncrop

    data = _blob((30, 34, 26))
    stored, affine = _flipped(data, RAS_AFFINE, axes)
    raw, scaled = tmp_path / "raw.nii.gz", tmp_path / "scaled.nii.gz"
    nib.save(nib.Nifti1Image(stored, affine), raw)
    step_scale(raw, scaled, "NDI", "fraction", "sub-01 ses-1")
    img = nib.load(scaled)
    mask = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image((img.get_fdata() > 0.1).astype(np.uint8), img.affine), mask)
    crop, box_file = tmp_path / "crop.nii.gz", tmp_path / "box.json"
    step_crop({"NDI": scaled}, mask, (21, 29, 17), {"NDI": crop},
              tmp_path / "cropmask.nii.gz", box_file, {})
    net = nib.load(crop)
    peak = np.unravel_index(np.argmax(net.get_fdata()), net.shape)
    relevance = np.zeros(net.shape, np.float32)
    relevance[tuple(slice(p - 1, p + 2) for p in peak)] = 1.0       # a 3^3 blob

    # back to the session's NDI grid, then onto the grid the file was stored in
    box, full_shape, full_affine = read_crop_box(box_file)
    ndi = nib.Nifti1Image(uncrop(relevance, box, full_shape), full_affine)
    on_stored = np.asarray(resample_from_to(ndi, (stored.shape, affine), order=0).dataobj)
    stored_peak = np.unravel_index(np.argmax(stored), stored.shape)
    assert on_stored[stored_peak] == 1.0 and on_stored.sum() == 27
    centre = np.argwhere(on_stored > 0).mean(axis=0)
    np.testing.assert_allclose(centre, stored_peak, atol=1e-9)

    # to a template: an affine written as ANTs writes the template registration
    tx = ants.create_ants_transform(transform_type="AffineTransform", dimension=3,
                                    matrix=[[0.97, -0.2, 0.0], [0.2, 0.97, 0.0],
                                            [0.0, 0.0, 1.0]], translation=[5.0, -3.0, 4.0])
    xfm = str(tmp_path / "affine.mat")
    ants.write_transform(tx, xfm)
    tpl_affine = np.diag([1.0, 1.0, 1.0, 1.0])
    tpl_affine[:3, 3] = [-60.0, -60.0, -60.0]
    tpl_mask = tmp_path / "template_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((120, 120, 120), np.uint8), tpl_affine), tpl_mask)
    warped, out_affine = warp_masks_to_template(relevance[None] > 0, net.affine,
                                                {"affine": xfm}, tpl_mask)
    # the blob's volume, 27 voxels of 2 x 2 x 2.5 mm, in 1 mm voxels (the matrix keeps volume
    # to 1%)
    assert warped.shape == (1, 120, 120, 120) and 240 <= warped.sum() <= 300
    got = nib.affines.apply_affine(out_affine, np.argwhere(warped[0]).mean(axis=0))
    world = nib.affines.apply_affine(affine, stored_peak)     # the stored file's voxel
    # the template registration maps session points to template points (read_affine_xfm)
    expected = nib.affines.apply_affine(read_affine_xfm(xfm), world)
    np.testing.assert_allclose(got, expected, atol=0.6)
