"""Image registration and resampling with ANTsPy (docs/method.md#2-preprocessing, steps
2.2-2.4, 2.6, 2.7).

Everything ANTs writes goes under an ``outprefix`` inside a working folder the caller
owns (never the system temp folder), and the transforms kept are copied to their final,
BIDS-like names by the caller. Registration is made repeatable by fixing ANTs' random
seed (``ANTS_RANDOM_SEED``) and the number of ITK threads.
"""

from __future__ import annotations

import os
import shutil
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np


def configure(threads: int = 1, seed: int = 42) -> None:
    """Fix ITK's thread count and ANTs' sampling seed for this process."""
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(max(1, int(threads)))
    os.environ["ANTS_RANDOM_SEED"] = str(int(seed))


#: ANTsPy subpackages the workflow never calls. ``import ants`` imports them all eagerly
#: (with matplotlib, scikit-learn and ANTsPy's deep-learning helpers: 0.5 CPU s of every
#: ANTs job's start-up, 2.1 -> 1.6 s, measured on the 2-core machine), so the first import here
#: leaves them out: while ANTsPy's ``__init__`` runs, each is an empty placeholder module,
#: removed again afterwards, so that a later ``import ants.plotting`` (by a user, in the
#: same process) loads the real one. No other ANTsPy subpackage imports them.
ANTS_UNUSED = ("learn", "plotting", "deeplearn", "contrib")

#: ``ants.math.quantile`` (time-series and intensity statistics the workflow never calls)
#: imports statsmodels and scipy.stats, another 0.7 s of every ANTs job's start-up
#: (1.15 -> 0.42 s). ``ants.math`` imports eight names from it and ``ants.math`` itself is
#: needed (``image_similarity``), so while ANTsPy's ``__init__`` runs the module is a
#: placeholder whose names are lazy: the first call of one imports the real module and
#: calls its function, so ``ants.quantile`` & co. still work, only later.
ANTS_LAZY = ("ants.math.quantile", ("ilr", "rank_intensity", "quantile", "regress_poly",
                                     "regress_components", "get_average_of_timeseries",
                                     "compcor", "bandpass_filter_matrix"))


def _lazy_module(name: str, functions) -> types.ModuleType:
    """A placeholder for module ``name`` whose ``functions`` import the real module (once
    the placeholder is gone from ``sys.modules``) and call its function of that name."""
    import importlib

    module = types.ModuleType(name)

    def lazy(fn):
        def call(*args, **kwargs):
            return getattr(importlib.import_module(name), fn)(*args, **kwargs)
        call.__name__ = call.__qualname__ = fn
        call.__doc__ = f"{name}.{fn}, imported on first call."
        return call

    for fn in functions:
        setattr(module, fn, lazy(fn))
    return module


def _ants():
    if "ants" not in sys.modules:
        placeholders = {n: types.ModuleType(n) for n in (f"ants.{m}" for m in ANTS_UNUSED)
                        if n not in sys.modules}
        lazy_name, lazy_functions = ANTS_LAZY
        if lazy_name not in sys.modules:
            placeholders[lazy_name] = _lazy_module(lazy_name, lazy_functions)
        sys.modules.update(placeholders)
        try:
            import ants  # noqa: F401
        finally:
            for n, module in placeholders.items():
                if sys.modules.get(n) is module:
                    del sys.modules[n]
    return sys.modules["ants"]


def to_ants(data, affine):
    """An ANTs image from a numpy array and its NIfTI (RAS) affine."""
    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    return _ants().from_nibabel_nifti(img)


def from_ants(img):
    """``(data, affine)`` of an ANTs image, in NIfTI (RAS) convention."""
    nii = _ants().to_nibabel_nifti(img)
    return np.asarray(nii.get_fdata(), dtype=np.float32), nii.affine


def register(fixed, moving, transform: str, workdir, metric: str = "mattes", **kwargs) -> dict:
    """Register ``moving`` to ``fixed`` (ANTs images). Returns ANTs' result dict.

    ``transform``: ``"Rigid"``, ``"Affine"`` or ``"SyN"`` (affine then SyN). The
    transforms are written under ``workdir`` only.
    """
    ants = _ants()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    return ants.registration(
        fixed=fixed,
        moving=moving,
        type_of_transform=transform,
        outprefix=str(workdir) + os.sep,
        aff_metric=metric,
        syn_metric=metric,
        **kwargs,
    )


def rotation_search(fixed, moving, out_path, *, step_deg: float = 20.0,
                    arc_fraction: float = 0.25, shrink: int = 2) -> str:
    """A start for a rigid registration from ANTs' multi-start search
    (antsAffineInitializer): ``moving`` rotated about its centre in steps of ``step_deg``
    degrees over ``arc_fraction`` of a half turn about every axis (0.25: up to 45
    degrees), the rotation with the best mutual information kept, without local search
    (a rotation and a translation, nothing else). Both images are searched at ``shrink``
    times their voxel size (the search compares hundreds of rotations). The transform is
    written to ``out_path`` (an ITK ``.mat``), whose path is returned."""
    ants = _ants()
    if shrink > 1:
        fixed, moving = (ants.resample_image(im, [s * shrink for s in im.spacing], False, 0)
                         for im in (fixed, moving))
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    ants.affine_initializer(fixed, moving, search_factor=step_deg,
                            radian_fraction=arc_fraction, use_principal_axis=False,
                            local_search_iterations=0, txfn=str(out_path))
    return str(out_path)


def apply(fixed, moving, transforms, interpolator="linear", invert=None):
    """Resample ``moving`` into ``fixed``'s grid through a list of transform files."""
    return _ants().apply_transforms(
        fixed=fixed,
        moving=moving,
        transformlist=[str(t) for t in transforms],
        interpolator=interpolator,
        whichtoinvert=invert,
    )


def apply_to_volumes(fixed, volumes, affine, transforms, interpolator="linear",
                     invert=None) -> np.ndarray:
    """Resample a stack of volumes (V, X, Y, Z) on one grid (``affine``, NIfTI RAS) into
    ``fixed``'s grid through the same transforms, in one ANTs call (a time series: the 3D
    transforms are read once and applied to each volume). Returns (V, X', Y', Z')."""
    ants = _ants()
    volumes = np.asarray(volumes, dtype=np.float32)
    first = to_ants(volumes[0], affine)
    direction = np.eye(4)
    direction[:3, :3] = first.direction
    series = ants.from_numpy(np.moveaxis(volumes, 0, -1), origin=[*first.origin, 0.0],
                             spacing=[*first.spacing, 1.0], direction=direction)
    out = ants.apply_transforms(fixed=fixed, moving=series,
                                transformlist=[str(t) for t in transforms],
                                interpolator=interpolator, whichtoinvert=invert, imagetype=3)
    # the volumes in the time axis, each in fixed's voxel order (as from_ants returns it)
    data = np.moveaxis(np.asarray(out.numpy(), dtype=np.float32), -1, 0)
    if data.shape[1:] != tuple(fixed.shape):
        raise ValueError(f"ANTs returned volumes of shape {data.shape[1:]}, expected "
                         f"{tuple(fixed.shape)}")
    return data


#: Masks per packed volume: float32 holds every integer below 2**24 exactly.
MASK_BITS = 24


def pack_masks(masks) -> np.ndarray:
    """Boolean masks (V, X, Y, Z) as float32 volumes (ceil(V / 24), X, Y, Z) whose value
    is the sum of 2**k over the masks k holding the voxel (mask i in bit i % 24 of volume
    i // 24): exact integers, so nearest-neighbour resampling carries every mask at once
    and :func:`unpack_masks` gives back exactly the masks a per-mask resampling would."""
    masks = np.asarray(masks, dtype=bool)
    packed = np.zeros((-(-masks.shape[0] // MASK_BITS),) + masks.shape[1:], dtype=np.int64)
    for i, m in enumerate(masks):
        packed[i // MASK_BITS] |= m.astype(np.int64) << (i % MASK_BITS)
    return packed.astype(np.float32)


def unpack_masks(packed, n: int) -> np.ndarray:
    """The ``n`` boolean masks of :func:`pack_masks`'s volumes (after resampling)."""
    values = np.rint(np.asarray(packed, dtype=np.float64)).astype(np.int64)
    return np.stack([(values[i // MASK_BITS] >> (i % MASK_BITS)) & 1 for i in range(int(n))]
                    ).astype(bool)


def warp_masks(fixed, masks, affine, transforms, invert=None) -> np.ndarray:
    """Boolean masks (V, X, Y, Z) on one grid into ``fixed``'s grid, nearest neighbour,
    24 masks per resampled volume (:func:`pack_masks`). Returns bool (V, X', Y', Z')."""
    masks = np.asarray(masks, dtype=bool)
    warped = apply_to_volumes(fixed, pack_masks(masks), affine, transforms,
                              "nearestNeighbor", invert)
    return unpack_masks(warped, masks.shape[0])


def similarity(fixed, warped, metric: str = "MattesMutualInformation") -> float:
    """ANTs' image similarity of ``warped`` (in ``fixed``'s grid) with ``fixed``; for
    mutual information, lower (more negative) is better."""
    return float(_ants().image_similarity(fixed, warped, metric_type=metric))


def keep(src, dst) -> None:
    """Copy a transform written by ANTs to its final name, atomically."""
    from .io import atomic_path

    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def read_affine_xfm(path) -> np.ndarray:
    """A 4x4 matrix (RAS, mm) of an ANTs affine ``.mat`` file, as applied to points.

    ANTs stores the transform mapping points of the fixed image to points of the
    moving image in LPS; the matrix returned maps RAS fixed points to RAS moving points.
    """
    tx = _ants().read_transform(str(path))
    params = np.asarray(tx.parameters, dtype=np.float64)
    fixed = np.asarray(tx.fixed_parameters, dtype=np.float64)
    a = params[:9].reshape(3, 3)
    t = params[9:12]
    c = fixed[:3]
    lps = np.eye(4)
    lps[:3, :3] = a
    lps[:3, 3] = t + c - a @ c
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ lps @ flip


def largest_component(mask) -> np.ndarray:
    """The largest 26-connected component of a boolean mask."""
    from scipy import ndimage

    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if n <= 1:
        return lab > 0
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == sizes.argmax()
