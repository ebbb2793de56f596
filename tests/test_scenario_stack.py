"""Scenario stacks (gamer_mril.scenario_stack): every scenario of a session in one 4D
image, its volume table in the header."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from gamer_mril.scenario_stack import (
    load_stack,
    save_stack,
    scenario_volumes,
    stack,
    unstack,
)

AFFINE = np.diag([1.5, 2.0, 2.5, 1.0])


def _arrays(dtype=np.float32):
    rng = np.random.default_rng(3)
    return {9: rng.normal(size=(4, 5, 6)).astype(dtype),              # combined
            1: rng.normal(size=(4, 5, 6, 3)).astype(dtype),           # individual
            3: rng.normal(size=(4, 5, 6)).astype(dtype)}


def test_volumes_in_scenario_order_with_their_names():
    data, table = stack(_arrays())
    assert data.shape == (4, 5, 6, 5)
    assert table == [{"scenario": 1, "volume": "qT1"}, {"scenario": 1, "volume": "MWF"},
                     {"scenario": 1, "volume": "NDI"}, {"scenario": 3, "volume": "combined"},
                     {"scenario": 9, "volume": "combined"}]
    a = _arrays()
    np.testing.assert_array_equal(data[..., 1], a[1][..., 1])
    np.testing.assert_array_equal(data[..., 4], a[9])
    # a model's own contrast names name the volumes
    assert [r["volume"] for r in stack(_arrays(), ("A", "B", "C", "D"))[1]][:3] == \
        ["A", "B", "C"]
    back = unstack(data, table)
    assert sorted(back) == [1, 3, 9]
    for n in a:
        np.testing.assert_array_equal(back[n], a[n])


def test_file_round_trip_reads_the_table_from_the_header(tmp_path):
    path = tmp_path / "sub-01_ses-1_space-NDIcrop_relmap.nii.gz"
    table = save_stack(_arrays(), AFFINE, path)
    # no sidecar: the file alone says which volume is which
    arrays, affine, read = load_stack(path)
    assert read == table
    np.testing.assert_allclose(affine, AFFINE)
    for n, a in _arrays().items():
        assert arrays[n].shape == a.shape
        np.testing.assert_array_equal(arrays[n], a)
    one, _ = scenario_volumes(path, 3)
    np.testing.assert_array_equal(one, _arrays()[3])
    with pytest.raises(ValueError, match=r"no scenario 5 \(it holds \[1, 3, 9\]\)"):
        scenario_volumes(path, 5)


def test_masks_stay_uint8(tmp_path):
    path = tmp_path / "masks.nii.gz"
    save_stack({n: a > 0 for n, a in _arrays().items()}, AFFINE, path)
    assert nib.load(str(path)).get_data_dtype() == np.uint8
    arrays, _, _ = load_stack(path)
    np.testing.assert_array_equal(arrays[1], (_arrays()[1] > 0).astype(np.uint8))


def test_an_image_without_table_and_bad_shapes_are_errors(tmp_path):
    plain = tmp_path / "sub-01_ses-1_space-NDIcrop_scenario-01_relmap.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 3), np.float32), AFFINE), str(plain))
    with pytest.raises(ValueError, match="not a scenario stack") as err:
        load_stack(plain)
    assert str(plain) in str(err.value)
    with pytest.raises(ValueError, match="grid"):
        stack({1: np.zeros((4, 5, 6)), 2: np.zeros((4, 5, 7))})
    with pytest.raises(ValueError, match=r"\(D, H, W\)"):
        stack({1: np.zeros((4, 5))})
    with pytest.raises(ValueError, match="no scenario"):
        stack({})
    with pytest.raises(ValueError, match="2 volumes in the table"):
        unstack(np.zeros((4, 5, 6, 3)), [{"scenario": 1, "volume": "combined"}] * 2)
