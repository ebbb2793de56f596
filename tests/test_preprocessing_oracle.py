"""Oracle tests for gamer_mril.preprocessing, written from docs/method.md#2-preprocessing.

Every expected value here is worked out by hand or by explicit, independent
numpy / Python loops in this file. No expected value is produced by calling another
function of the module under test.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import numpy as np
import pytest

from gamer_mril import preprocessing as pp
from gamer_mril import spaces

GRID = (10, 12, 8)


# ----------------------------------------------------------------------------------
# helpers (independent reference implementations, explicit loops)
# ----------------------------------------------------------------------------------


def _inside(idx, shape):
    return all(0 <= a < n for a, n in zip(idx, shape))


def _ref_crop(data, start, shape, fill):
    out = np.full(shape, fill, dtype=data.dtype)
    for ijk in itertools.product(*(range(n) for n in shape)):
        src = tuple(s + a for s, a in zip(start, ijk))
        if _inside(src, data.shape):
            out[ijk] = data[src]
    return out


def _ref_uncrop(cropped, start, full_shape, fill):
    out = np.full(full_shape, fill, dtype=np.float64)
    for ijk in itertools.product(*(range(n) for n in cropped.shape)):
        dst = tuple(s + a for s, a in zip(start, ijk))
        if _inside(dst, full_shape):
            out[dst] = cropped[ijk]
    return out


def _ref_covered(start, shape, full_shape):
    cov = np.zeros(full_shape, dtype=bool)
    for ijk in itertools.product(*(range(n) for n in shape)):
        dst = tuple(s + a for s, a in zip(start, ijk))
        if _inside(dst, full_shape):
            cov[dst] = True
    return cov


def _ref_bbox(mask):
    """Bounding box by a plain loop over all voxels: lo inclusive, hi exclusive."""
    lo = [None, None, None]
    hi = [None, None, None]
    for ijk in itertools.product(*(range(n) for n in mask.shape)):
        if mask[ijk]:
            for ax in range(3):
                v = ijk[ax]
                lo[ax] = v if lo[ax] is None else min(lo[ax], v)
                hi[ax] = v + 1 if hi[ax] is None else max(hi[ax], v + 1)
    return lo, hi


def _blob_mask():
    """Irregular brain blob in a 10x12x8 grid.

    Extremes are single voxels, so the bounding box is set by them, not by the core:
      axis 0: voxels at 2 and 6  -> lo 2, hi 7, extent 5
      axis 1: voxels at 3 and 9  -> lo 3, hi 10, extent 7
      axis 2: voxels at 1 and 6  -> lo 1, hi 7, extent 6
    """
    m = np.zeros(GRID, dtype=bool)
    m[3:6, 4:8, 2:6] = True
    m[2, 5, 3] = True
    m[6, 5, 3] = True
    m[4, 3, 3] = True
    m[4, 9, 3] = True
    m[4, 5, 1] = True
    m[4, 5, 6] = True
    return m


def _box(start, shape):
    return spaces.CropBox(start=tuple(start), shape=tuple(shape))


def _rot(axis, deg):
    t = math.radians(deg)
    c, s = math.cos(t), math.sin(t)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=float)
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=float)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=float)


def _oblique_affine():
    """Rotation + anisotropic voxel sizes + translation."""
    a = np.eye(4)
    a[:3, :3] = _rot("z", 30.0) @ _rot("x", 20.0) @ _rot("y", -12.5) @ np.diag([0.9, 1.1, 2.5])
    a[:3, 3] = [-90.25, 17.5, -40.0]
    return a


# ----------------------------------------------------------------------------------
# RANGES
# ----------------------------------------------------------------------------------


def test_ranges_values_and_order():
    assert list(pp.RANGES) == ["qT1", "MWF", "NDI"]
    assert pp.RANGES["qT1"] == (0.0, 2500.0)
    assert pp.RANGES["MWF"] == (0.0, 0.30)
    assert pp.RANGES["NDI"] == (0.0, 1.0)


# ----------------------------------------------------------------------------------
# scale_to_unit
# ----------------------------------------------------------------------------------


def test_scale_qt1_hand_vector():
    x = np.array([-5.0, 0.0, 1250.0, 2500.0, 3000.0, np.nan, np.inf, -np.inf])
    out, n = pp.scale_to_unit(x, 0.0, 2500.0)
    # clip to [0, 2500] then / 2500; nan, +inf, -inf -> 0
    np.testing.assert_array_equal(out, np.array([0, 0, 0.5, 1, 1, 0, 0, 0], dtype=np.float32))
    assert n == 3
    assert out.dtype == np.float32
    assert out.shape == x.shape


def test_scale_mwf_hand_vector():
    x = np.array([0.15, 0.3, 0.45, -0.1])
    out, n = pp.scale_to_unit(x, *pp.RANGES["MWF"])
    np.testing.assert_allclose(out, [0.5, 1.0, 1.0, 0.0], rtol=1e-6, atol=0)
    assert n == 0
    assert out.dtype == np.float32


def test_scale_mwf_percent_like_values_are_clipped_not_rescaled():
    # A percentage map would be a unit error elsewhere; here plain clipping applies.
    x = np.array([12.0, 0.06, 0.0])
    out, n = pp.scale_to_unit(x, 0.0, 0.30)
    np.testing.assert_allclose(out, [1.0, 0.2, 0.0], rtol=1e-6, atol=0)
    assert n == 0


def test_scale_ndi_hand_vector():
    x = np.array([-0.2, 0.0, 0.25, 0.5, 1.0, 1.7, np.nan], dtype=np.float32)
    out, n = pp.scale_to_unit(x, *pp.RANGES["NDI"])
    np.testing.assert_array_equal(out, np.array([0, 0, 0.25, 0.5, 1, 1, 0], dtype=np.float32))
    assert n == 1
    assert out.dtype == np.float32


def test_scale_divides_by_upper_bound_not_range_width():
    # low != 0: the method divides by the upper bound (not (x - low) / (high - low)).
    x = np.array([5.0, 10.0, 50.0, 200.0])
    out, n = pp.scale_to_unit(x, 10.0, 100.0)
    # clipped: [10, 10, 50, 100] / 100
    np.testing.assert_allclose(out, [0.1, 0.1, 0.5, 1.0], rtol=1e-6, atol=0)
    assert n == 0


def test_scale_3d_shape_dtype_and_count_json_serialisable():
    x = np.full((3, 4, 5), 500.0)
    x[0, 0, 0] = np.nan
    x[1, 2, 3] = np.inf
    x[2, 3, 4] = -np.inf
    x[1, 1, 1] = 5000.0
    out, n = pp.scale_to_unit(x, 0.0, 2500.0)
    assert out.shape == (3, 4, 5)
    assert out.dtype == np.float32
    assert n == 3
    # the count goes into a JSON sidecar
    assert json.loads(json.dumps({"n_nonfinite": int(n)}))["n_nonfinite"] == 3
    expected = np.full((3, 4, 5), 0.2, dtype=np.float32)
    expected[0, 0, 0] = 0
    expected[1, 2, 3] = 0
    expected[2, 3, 4] = 0
    expected[1, 1, 1] = 1
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=0)


def test_scale_integer_input():
    # qT1 maps are often stored as integers (ms).
    x = np.array([[-3, 0], [625, 4000]], dtype=np.int16)
    out, n = pp.scale_to_unit(x, 0.0, 2500.0)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([[0, 0], [0.25, 1]], dtype=np.float32))
    assert n == 0


def test_scale_does_not_modify_input():
    x = np.array([-5.0, 1250.0, 3000.0, np.nan, np.inf, -np.inf])
    before = x.copy()
    out, _ = pp.scale_to_unit(x, 0.0, 2500.0)
    np.testing.assert_array_equal(x, before)  # nan == nan in assert_array_equal
    assert np.isnan(x[3]) and np.isposinf(x[4]) and np.isneginf(x[5])
    assert not np.shares_memory(out, x)

    x32 = np.array([np.nan, 3000.0, -1.0, 100.0], dtype=np.float32)
    before32 = x32.copy()
    out32, _ = pp.scale_to_unit(x32, 0.0, 2500.0)
    np.testing.assert_array_equal(x32, before32)
    assert not np.shares_memory(out32, x32)


@pytest.mark.parametrize("contrast", ["qT1", "MWF", "NDI"])
def test_scale_property_random(contrast):
    low, high = {"qT1": (0.0, 2500.0), "MWF": (0.0, 0.30), "NDI": (0.0, 1.0)}[contrast]
    rng = np.random.default_rng(12345 + len(contrast))
    x = rng.normal(loc=high / 2, scale=high * 2, size=(6, 5, 4))
    # sprinkle non-finite values at known places
    flat = x.reshape(-1)
    picks = rng.choice(flat.size, size=17, replace=False)
    specials = [np.nan, np.inf, -np.inf]
    for t, p in enumerate(picks):
        flat[p] = specials[t % 3]
    out, n = pp.scale_to_unit(x, low, high)

    assert out.dtype == np.float32
    assert out.shape == x.shape
    assert n == 17
    assert np.all(np.isfinite(out))
    assert out.min() >= 0.0
    assert out.max() <= 1.0

    expected = np.empty(x.shape, dtype=np.float64)
    for idx in itertools.product(*(range(s) for s in x.shape)):
        v = float(x[idx])
        if not math.isfinite(v):
            v = 0.0
        v = min(max(v, low), high)
        expected[idx] = v / high
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------
# CropBox
# ----------------------------------------------------------------------------------


def test_cropbox_dict_roundtrip():
    box = spaces.CropBox(start=(1, -2, 3), shape=(4, 5, 6))
    d = box.to_dict()
    assert d == {"start": [1, -2, 3], "shape": [4, 5, 6]}
    assert isinstance(d["start"], list) and isinstance(d["shape"], list)
    assert all(type(v) is int for v in d["start"] + d["shape"])
    # survives JSON
    d2 = json.loads(json.dumps(d))
    back = spaces.CropBox.from_dict(d2)
    assert back == box
    assert tuple(back.start) == (1, -2, 3)
    assert tuple(back.shape) == (4, 5, 6)
    # from a plain dict of lists, the fields are tuples (so equality / hashing work)
    assert spaces.CropBox.from_dict({"start": [1, -2, 3], "shape": [4, 5, 6]}) == spaces.CropBox(
        start=(1, -2, 3), shape=(4, 5, 6)
    )
    assert hash(back) == hash(box)


def test_cropbox_is_frozen():
    box = spaces.CropBox(start=(0, 0, 0), shape=(1, 1, 1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        box.start = (1, 1, 1)  # type: ignore[misc]


# ----------------------------------------------------------------------------------
# crop_box
# ----------------------------------------------------------------------------------


def test_bounding_box_by_hand():
    """spaces.bounding_box, which the crop step uses: lo inclusive, hi exclusive per axis.
    The blob's box is set by its single-voxel extremes (the hand values the crop cases
    below start from); one voxel gives a box of one voxel; an empty mask has none."""
    lo, hi = spaces.bounding_box(_blob_mask())
    assert lo.tolist() == [2, 3, 1]
    assert hi.tolist() == [7, 10, 7]
    one = np.zeros(GRID, dtype=bool)
    one[9, 0, 4] = True                          # a corner of axes 0 and 1
    lo, hi = spaces.bounding_box(one)
    assert lo.tolist() == [9, 0, 4] and hi.tolist() == [10, 1, 5]
    with pytest.raises(ValueError, match="empty mask"):
        spaces.bounding_box(np.zeros(GRID, dtype=bool))


@pytest.mark.parametrize(
    "shape, start",
    [
        # equal to the bbox extents (5, 7, 6): start = lo
        ((5, 7, 6), (2, 3, 1)),
        # smaller, even leftovers: 2+(5-3)//2=3, 3+(7-3)//2=5, 1+(6-2)//2=3
        ((3, 3, 2), (3, 5, 3)),
        # smaller, odd leftovers: 2+(5-4)//2=2, 3+(7-4)//2=4, 1+(6-3)//2=2
        ((4, 4, 3), (2, 4, 2)),
        # larger, odd negative numerators (floor, not truncation):
        #   2+(5-8)//2 = 2+(-2) = 0 ; 3+(7-10)//2 = 3+(-2) = 1 ; 1+(6-9)//2 = 1+(-2) = -1
        ((8, 10, 9), (0, 1, -1)),
        # larger, even negative numerators: 2+(-4)//2=0, 3+(-4)//2=1, 1+(-2)//2=0
        ((9, 11, 8), (0, 1, 0)),
        # larger than the whole grid (padding on both sides):
        #   2+(-9)//2 = 2-5 = -3 ; 3+(-9)//2 = 3-5 = -2 ; 1+(-6)//2 = 1-3 = -2
        ((14, 16, 12), (-3, -2, -2)),
        # mixed: smaller on axis 0, equal on axis 1, larger (odd) on axis 2
        #   2+(5-2)//2 = 3 ; 3+0 = 3 ; 1+(6-7)//2 = 1-1 = 0
        ((2, 7, 7), (3, 3, 0)),
    ],
)
def test_crop_box_hand_values(shape, start):
    box = spaces.crop_box(_blob_mask(), shape)
    assert isinstance(box, spaces.CropBox)
    assert tuple(box.start) == start
    assert tuple(box.shape) == shape
    # must be JSON-able (plain ints, not numpy scalars)
    assert json.loads(json.dumps(box.to_dict())) == {"start": list(start), "shape": list(shape)}


def test_crop_box_single_voxel_at_grid_corner():
    m = np.zeros(GRID, dtype=bool)
    m[9, 0, 7] = True  # lo=(9,0,7), hi=(10,1,8), extents 1
    box = spaces.crop_box(m, (3, 3, 4))
    # 9+(1-3)//2 = 8 ; 0+(1-3)//2 = -1 ; 7+(1-4)//2 = 7-2 = 5
    assert tuple(box.start) == (8, -1, 5)
    assert tuple(box.shape) == (3, 3, 4)


def test_crop_box_empty_mask_raises():
    with pytest.raises(ValueError):
        spaces.crop_box(np.zeros(GRID, dtype=bool), (4, 4, 4))


def test_crop_box_random_masks_against_loop_reference():
    rng = np.random.default_rng(7)
    for trial in range(25):
        m = rng.random(GRID) < 0.02
        if not m.any():
            m[rng.integers(0, 10), rng.integers(0, 12), rng.integers(0, 8)] = True
        shape = tuple(int(v) for v in rng.integers(1, 16, size=3))
        lo, hi = _ref_bbox(m)
        exp = tuple(lo[a] + math.floor((hi[a] - lo[a] - shape[a]) / 2) for a in range(3))
        box = spaces.crop_box(m, shape)
        assert tuple(box.start) == exp, (trial, shape, lo, hi)
        assert tuple(box.shape) == shape


# ----------------------------------------------------------------------------------
# apply_crop
# ----------------------------------------------------------------------------------


def _arange_volume():
    return np.arange(10 * 12 * 8).reshape(GRID)


def test_apply_crop_inside_hand_values():
    x = _arange_volume()  # x[i,j,k] = 96*i + 8*j + k
    out = spaces.apply_crop(x, _box((2, 3, 1), (2, 2, 3)))
    assert out.shape == (2, 2, 3)
    assert out.dtype == x.dtype
    expected = np.array(
        [
            [[217, 218, 219], [225, 226, 227]],  # i=2: 192+24+{1,2,3}, 192+32+{1,2,3}
            [[313, 314, 315], [321, 322, 323]],  # i=3: 288+24+..., 288+32+...
        ]
    )
    np.testing.assert_array_equal(out, expected)


def test_apply_crop_padding_low_side_hand_values():
    x = _arange_volume()
    out = spaces.apply_crop(x, _box((-1, 0, 6), (2, 1, 3)))
    # rows: i=-1 (outside) and i=0; j=0; k = 6, 7, 8 (8 outside)
    expected = np.array([[[0, 0, 0]], [[6, 7, 0]]])
    np.testing.assert_array_equal(out, expected)
    out_f = spaces.apply_crop(x, _box((-1, 0, 6), (2, 1, 3)), fill=-7)
    expected_f = np.array([[[-7, -7, -7]], [[6, 7, -7]]])
    np.testing.assert_array_equal(out_f, expected_f)


@pytest.mark.parametrize(
    "start, shape",
    [
        ((2, 3, 1), (5, 7, 6)),  # fully inside
        ((0, 1, -1), (8, 10, 9)),  # pads on axis 2 low, axis 2 high (−1+9=8 = edge)
        ((-3, -2, -2), (14, 16, 12)),  # sticks out of the grid on both sides, every axis
        ((7, -4, 5), (6, 5, 6)),  # pads high on 0, low on 1, high on 2
        ((0, 0, 0), (10, 12, 8)),  # exactly the grid
    ],
)
def test_apply_crop_against_loop_reference(start, shape):
    x = _arange_volume()
    out = spaces.apply_crop(x, _box(start, shape), fill=-1)
    np.testing.assert_array_equal(out, _ref_crop(x, start, shape, -1))
    out0 = spaces.apply_crop(x, _box(start, shape))
    np.testing.assert_array_equal(out0, _ref_crop(x, start, shape, 0))
    assert out0.shape == shape
    assert out0.dtype == x.dtype


def test_apply_crop_both_sides_hand_spot_checks():
    x = _arange_volume() + 1  # so real voxels are never 0
    out = spaces.apply_crop(x, _box((-3, -2, -2), (14, 16, 12)))
    assert out.shape == (14, 16, 12)
    assert out[3, 2, 2] == 1  # full (0,0,0)
    assert out[12, 13, 9] == 960  # full (9,11,7) = 96*9+8*11+7+1
    assert out[2, 2, 2] == 0 and out[3, 1, 2] == 0 and out[3, 2, 1] == 0
    assert out[13, 13, 9] == 0 and out[12, 14, 9] == 0 and out[12, 13, 10] == 0
    # exactly 960 non-padding voxels, all distinct: the whole grid is inside once
    assert np.count_nonzero(out) == 960
    assert sorted(out[out > 0].tolist()) == list(range(1, 961))


def test_apply_crop_keeps_float32_and_bool():
    xf = (np.arange(960, dtype=np.float32) / 7).reshape(GRID)
    of = spaces.apply_crop(xf, _box((-1, 2, 3), (4, 4, 4)))
    assert of.dtype == np.float32
    np.testing.assert_array_equal(of, _ref_crop(xf, (-1, 2, 3), (4, 4, 4), 0))

    m = _blob_mask()
    om = spaces.apply_crop(m, _box((0, 1, -1), (8, 10, 9)))
    assert om.dtype == np.bool_
    np.testing.assert_array_equal(om, _ref_crop(m, (0, 1, -1), (8, 10, 9), False))
    assert om.sum() == m.sum()  # this box covers the whole blob


def test_apply_crop_box_entirely_outside_is_all_fill():
    x = _arange_volume()
    out = spaces.apply_crop(x, _box((20, 0, 0), (2, 3, 4)), fill=5)
    np.testing.assert_array_equal(out, np.full((2, 3, 4), 5))
    out2 = spaces.apply_crop(x, _box((0, -10, 0), (2, 3, 4)))
    np.testing.assert_array_equal(out2, np.zeros((2, 3, 4)))


def test_apply_crop_does_not_modify_input():
    x = _arange_volume()
    before = x.copy()
    out = spaces.apply_crop(x, _box((2, 3, 1), (3, 3, 3)))
    out[...] = -99
    np.testing.assert_array_equal(x, before)


# ----------------------------------------------------------------------------------
# uncrop
# ----------------------------------------------------------------------------------


def test_uncrop_hand_values():
    c = np.array([[[1, 2, 3]], [[4, 5, 6]]], dtype=np.float32)  # shape (2,1,3)
    full = spaces.uncrop(c, _box((-1, 0, 6), (2, 1, 3)), GRID)
    assert full.shape == GRID
    # only c[1,0,0] -> (0,0,6) and c[1,0,1] -> (0,0,7) land in the grid
    expected = np.zeros(GRID)
    expected[0, 0, 6] = 4
    expected[0, 0, 7] = 5
    np.testing.assert_array_equal(full, expected)

    full_f = spaces.uncrop(c, _box((-1, 0, 6), (2, 1, 3)), GRID, fill=-2)
    expected_f = np.full(GRID, -2.0)
    expected_f[0, 0, 6] = 4
    expected_f[0, 0, 7] = 5
    np.testing.assert_array_equal(full_f, expected_f)


@pytest.mark.parametrize(
    "start, shape",
    [
        ((2, 3, 1), (5, 7, 6)),
        ((0, 1, -1), (8, 10, 9)),
        ((-3, -2, -2), (14, 16, 12)),
        ((7, -4, 5), (6, 5, 6)),
        ((3, 5, 3), (3, 3, 2)),
    ],
)
def test_uncrop_against_loop_reference(start, shape):
    rng = np.random.default_rng(99)
    c = rng.normal(size=shape).astype(np.float32)
    full = spaces.uncrop(c, _box(start, shape), GRID)
    assert full.shape == GRID
    np.testing.assert_array_equal(full, _ref_uncrop(c, start, GRID, 0.0))
    full_f = spaces.uncrop(c, _box(start, shape), GRID, fill=-3)
    np.testing.assert_array_equal(full_f, _ref_uncrop(c, start, GRID, -3.0))


@pytest.mark.parametrize(
    "start, shape",
    [
        ((2, 3, 1), (5, 7, 6)),
        ((3, 5, 3), (3, 3, 2)),
        ((0, 1, -1), (8, 10, 9)),
        ((7, -4, 5), (6, 5, 6)),
        ((-3, -2, -2), (14, 16, 12)),
    ],
)
def test_uncrop_of_crop_restores_covered_region(start, shape):
    x = (_arange_volume() + 1).astype(np.float64)
    box = _box(start, shape)
    back = spaces.uncrop(spaces.apply_crop(x, box), box, GRID)
    cov = _ref_covered(start, shape, GRID)
    assert back.shape == GRID
    np.testing.assert_array_equal(back[cov], x[cov])
    assert np.all(back[~cov] == 0)
    # number of covered voxels, worked out per axis by hand for each case
    n_cov = {
        (2, 3, 1): 5 * 7 * 6,
        (3, 5, 3): 3 * 3 * 2,
        (0, 1, -1): 8 * 10 * 8,  # axis 2: -1..7 -> 0..7 = 8
        (7, -4, 5): 3 * 1 * 3,  # axis0 7..12 -> 7..9 ; axis1 -4..0 -> 0 ; axis2 5..10 -> 5..7
        (-3, -2, -2): 10 * 12 * 8,
    }[start]
    assert int(cov.sum()) == n_cov
    assert int(np.count_nonzero(back)) == n_cov


def test_uncrop_of_crop_both_sides_is_identity():
    x = np.random.default_rng(3).normal(size=GRID)
    box = _box((-3, -2, -2), (14, 16, 12))
    back = spaces.uncrop(spaces.apply_crop(x, box), box, GRID)
    np.testing.assert_array_equal(back, x)


def test_crop_of_uncrop_keeps_in_grid_part():
    rng = np.random.default_rng(5)
    c = rng.normal(size=(14, 16, 12))
    box = _box((-3, -2, -2), (14, 16, 12))
    again = spaces.apply_crop(spaces.uncrop(c, box, GRID), box)
    expected = np.zeros_like(c)
    expected[3:13, 2:14, 2:10] = c[3:13, 2:14, 2:10]
    np.testing.assert_array_equal(again, expected)


def test_crop_box_then_crop_then_uncrop_recovers_masked_map_when_box_holds_brain():
    # the recorded box lets a cropped map go back to the NDI grid exactly
    m = _blob_mask()
    x = np.random.default_rng(11).uniform(0.1, 1.0, size=GRID)
    masked = np.where(m, x, 0.0)  # independent masking
    for shape in [(5, 7, 6), (6, 8, 7), (8, 10, 9), (14, 16, 12)]:
        box = spaces.crop_box(m, shape)
        back = spaces.uncrop(spaces.apply_crop(masked, box), box, GRID)
        np.testing.assert_array_equal(back, masked)


# ----------------------------------------------------------------------------------
# crop_affine
# ----------------------------------------------------------------------------------


def test_crop_affine_diagonal_hand_values():
    a = np.array(
        [
            [2.0, 0, 0, -10.0],
            [0, 3.0, 0, 5.0],
            [0, 0, 4.0, 7.0],
            [0, 0, 0, 1.0],
        ]
    )
    out = spaces.crop_affine(a, _box((1, -2, 3), (4, 4, 4)))
    expected = np.array(
        [
            [2.0, 0, 0, -10.0 + 2.0 * 1],
            [0, 3.0, 0, 5.0 + 3.0 * -2],
            [0, 0, 4.0, 7.0 + 4.0 * 3],
            [0, 0, 0, 1.0],
        ]
    )  # translation (-8, -1, 19)
    assert out.shape == (4, 4)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("start", [(3, 5, 3), (-3, -2, -2), (0, 0, 0), (7, -4, 5)])
def test_crop_affine_oblique_world_coordinates(start):
    a = _oblique_affine()
    a_before = a.copy()
    shape = (6, 5, 4)
    out = spaces.crop_affine(a, _box(start, shape))
    np.testing.assert_array_equal(a, a_before)  # input untouched
    assert out.shape == (4, 4)
    np.testing.assert_allclose(out[3], [0, 0, 0, 1], atol=1e-12)
    for ijk in itertools.product(range(shape[0]), range(shape[1]), range(shape[2])):
        v_crop = np.array([ijk[0], ijk[1], ijk[2], 1.0])
        v_full = np.array([start[0] + ijk[0], start[1] + ijk[1], start[2] + ijk[2], 1.0])
        w_crop = out @ v_crop
        w_full = a @ v_full
        np.testing.assert_allclose(w_crop, w_full, rtol=0, atol=1e-9)
    # linear part unchanged; translation = A[:3,:3] @ start + A[:3,3], written out
    np.testing.assert_allclose(out[:3, :3], a[:3, :3], rtol=0, atol=1e-12)
    t = [
        a[r, 0] * start[0] + a[r, 1] * start[1] + a[r, 2] * start[2] + a[r, 3]
        for r in range(3)
    ]
    np.testing.assert_allclose(out[:3, 3], t, rtol=0, atol=1e-9)


def test_crop_affine_consistent_with_cropped_contents():
    # a voxel value at a given world point is the same in the full and cropped images
    import nibabel as nib

    a = _oblique_affine()
    x = _arange_volume()
    box = _box((2, -1, 3), (4, 5, 6))
    c = spaces.apply_crop(x, box)
    ca = spaces.crop_affine(a, box)
    inv = np.linalg.inv(a)
    for ijk in [(0, 1, 0), (3, 4, 4), (1, 2, 2)]:
        world = nib.affines.apply_affine(ca, ijk)
        full_ijk = np.rint(nib.affines.apply_affine(inv, world)).astype(int)
        assert tuple(full_ijk) == (2 + ijk[0], -1 + ijk[1], 3 + ijk[2])
        assert c[ijk] == x[tuple(full_ijk)]


# ----------------------------------------------------------------------------------
# apply_mask
# ----------------------------------------------------------------------------------


def test_apply_mask_hand_values():
    data = np.array([[1.5, -2.0, 3.0], [4.0, 5.25, 6.0]])
    mask = np.array([[True, False, True], [False, True, False]])
    out = pp.apply_mask(data, mask)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([[1.5, 0, 3.0], [0, 5.25, 0]], dtype=np.float32))


def test_apply_mask_3d_outside_is_zero_even_for_nonfinite():
    data = np.full((3, 3, 3), 2.0)
    data[0, 0, 0] = np.nan
    data[2, 2, 2] = np.inf
    data[1, 0, 2] = -np.inf
    mask = np.zeros((3, 3, 3), dtype=bool)
    mask[1, 1, 1] = True
    mask[0, 1, 2] = True
    before = data.copy()
    out = pp.apply_mask(data, mask)
    expected = np.zeros((3, 3, 3), dtype=np.float32)
    expected[1, 1, 1] = 2.0
    expected[0, 1, 2] = 2.0
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(data, before)


def test_apply_mask_integer_data_random_against_loop():
    rng = np.random.default_rng(21)
    data = rng.integers(-1000, 3000, size=(5, 6, 4)).astype(np.int32)
    mask = rng.random((5, 6, 4)) < 0.4
    out = pp.apply_mask(data, mask)
    assert out.dtype == np.float32
    expected = np.zeros((5, 6, 4), dtype=np.float32)
    for idx in itertools.product(range(5), range(6), range(4)):
        if mask[idx]:
            expected[idx] = float(data[idx])
    np.testing.assert_array_equal(out, expected)


# ----------------------------------------------------------------------------------
# dice
# ----------------------------------------------------------------------------------


def test_dice_hand_values():
    a = np.zeros((4, 4, 4), dtype=bool)
    b = np.zeros((4, 4, 4), dtype=bool)
    a[0, 0, 0:4] = True  # |A| = 4
    b[0, 0, 1:4] = True  # 3 shared
    b[3, 3, 0:3] = True  # |B| = 6
    d = pp.dice(a, b)
    assert isinstance(d, float)
    assert d == pytest.approx(2 * 3 / (4 + 6))  # 0.6
    assert pp.dice(b, a) == pytest.approx(0.6)


def test_dice_identical_disjoint_and_empty():
    a = np.zeros((3, 3, 3), dtype=bool)
    a[1, 1, :] = True
    b = np.zeros((3, 3, 3), dtype=bool)
    b[0, 0, 0] = True
    empty = np.zeros((3, 3, 3), dtype=bool)
    assert pp.dice(a, a.copy()) == pytest.approx(1.0)
    assert pp.dice(a, b) == pytest.approx(0.0)
    assert pp.dice(a, empty) == pytest.approx(0.0)
    assert pp.dice(empty, a) == pytest.approx(0.0)
    both = pp.dice(empty, empty.copy())
    assert both == 1.0
    assert isinstance(both, float)


def test_dice_random_against_counting_loop():
    rng = np.random.default_rng(31)
    for _ in range(5):
        a = rng.random((7, 6, 5)) < 0.3
        b = rng.random((7, 6, 5)) < 0.5
        inter = na = nb = 0
        for idx in itertools.product(range(7), range(6), range(5)):
            na += bool(a[idx])
            nb += bool(b[idx])
            inter += bool(a[idx]) and bool(b[idx])
        assert pp.dice(a, b) == pytest.approx(2.0 * inter / (na + nb), rel=1e-12)


# ----------------------------------------------------------------------------------
# remove_region
# ----------------------------------------------------------------------------------


def test_remove_region_hand_values_and_inputs_untouched():
    rng = np.random.default_rng(41)
    images = {
        "qT1": rng.uniform(0.1, 1.0, size=(4, 5, 3)).astype(np.float32),
        "MWF": rng.uniform(0.1, 1.0, size=(4, 5, 3)).astype(np.float32),
        "NDI": rng.uniform(0.1, 1.0, size=(4, 5, 3)).astype(np.float32),
    }
    images["NDI"][3, 4, 2] = np.nan  # inside the region: must become 0
    originals = {k: v.copy() for k, v in images.items()}
    region = np.zeros((4, 5, 3), dtype=bool)
    region[3, 3:5, :] = True  # 6 voxels
    region[0, 0, 0] = True  # 1 voxel

    out = pp.remove_region(images, region)

    assert set(out) == {"qT1", "MWF", "NDI"}
    for k in images:
        # inputs untouched (nan compares equal in assert_array_equal)
        np.testing.assert_array_equal(images[k], originals[k])
        assert out[k] is not images[k]
        assert not np.shares_memory(out[k], images[k])
        assert out[k].shape == (4, 5, 3)
        for idx in itertools.product(range(4), range(5), range(3)):
            if region[idx]:
                assert out[k][idx] == 0, (k, idx)
            else:
                assert out[k][idx] == originals[k][idx], (k, idx)
        # exactly the 7 region voxels were zeroed (originals are all > 0.1 outside)
        assert int(np.count_nonzero(out[k] == 0)) == 7


def test_remove_region_empty_region_is_copy():
    images = {"qT1": np.arange(24, dtype=np.float64).reshape(2, 3, 4)}
    out = pp.remove_region(images, np.zeros((2, 3, 4), dtype=bool))
    np.testing.assert_array_equal(out["qT1"], np.arange(24).reshape(2, 3, 4))
    assert not np.shares_memory(out["qT1"], images["qT1"])
