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
