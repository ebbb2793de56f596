"""Visual quality control per session (docs/method.md#28-quality-control-numbers): the
NiPreps reportlets, drawn with nireports, one SVG file each.

* brain mask: its contour over the scaled qT1 map (step 2c);
* co-registration: NDI against qT1 (and MWF) resampled into its grid, as a flicker
  (step 3, after step 4), the NDI brain mask's contour on both;
* MNI152: the template's T1w against the session's qT1 map carried into MNI152 through
  the session's transforms (step 6), the template's brain outline on both;
* cerebellum: the mask removed (step 7), with the brain's contour, over the qT1 map;
* relevance: the chosen scenario's top-N mask over the session's NDI map.

nireports draws with nilearn and matplotlib and writes standalone SVG; nothing is fetched
(the template images come from nilearn's own files).
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np

#: Cuts per view (axial, sagittal, coronal), as NiPreps draw them; ``qc.reportlet_cuts``.
CUTS = 7


def _nireports():
    """nireports' reportlet functions, imported once (nipype's network check off), the
    objects of the imports frozen out of the garbage collector: nilearn calls
    ``gc.collect()`` for every image it reads, which otherwise walks them all each time
    (a third of a reportlet's time)."""
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    import matplotlib

    matplotlib.use("Agg")
    from nireports.reportlets import mosaic, utils

    gc.collect()
    gc.freeze()
    return mosaic, utils


def _img(x):
    return x if isinstance(x, nib.spatialimages.SpatialImage) else nib.load(str(x))


#: Display width (px) of a reportlet: nireports' SVGs give only a viewBox, so that an
#: HTML page sizes them by CSS; in an ``<img>`` of a page that does not (Snakemake's
#: report) they would take no room at all.
WIDTH = 960

_VIEWBOX = re.compile(r'<svg\b([^>]*?)viewBox="0 0 ([0-9.]+) ([0-9.]+)"')


def sized(svg: str, width: float = WIDTH) -> str:
    """``svg`` with width and height attributes on its root (the viewBox's aspect), unless
    it has them."""
    m = _VIEWBOX.search(svg)
    if not m or re.search(r"\bwidth=", svg[m.start():svg.index(">", m.start())]):
        return svg
    w, h = float(m.group(2)), float(m.group(3))
    return (svg[:m.start()] + f'<svg width="{width:g}" height="{width * h / w:.1f}"'
            + svg[m.start() + 4:])


def _write(out, compose):
    """Write the SVG composed by ``compose(tmp_path)`` atomically at ``out``, sized."""
    from .io import atomic_path

    with atomic_path(out) as tmp:
        compose(tmp)
        Path(tmp).write_text(sized(Path(tmp).read_text()))


#: Passed to nilearn's ``imshow``: ``"none"`` embeds each slice in the SVG at its own
#: voxel resolution, drawn pixelated by the browser (the same look as nilearn's
#: ``"nearest"``), instead of a nearest-neighbour resampling at 300 dpi: a fifth less
#: time per reportlet and smaller files.
PLOT_PARAMS = {"interpolation": "none"}


def _views(mosaic, utils, image, contour, label, div, cuts, bbox=None):
    contour = _img(contour)
    return mosaic.plot_registration(
        _img(image), div, estimate_brightness=True, plot_params=dict(PLOT_PARAMS),
        cuts=utils.cuts_from_bbox(_img(bbox) if bbox is not None else contour, cuts=cuts),
        label=label, contour=contour, compress=False)


def contour_reportlet(image, mask, out, label=None, bbox=None, cuts: int = CUTS) -> None:
    """The contour of ``mask`` (red) over ``image``, cuts through ``bbox`` (default: the
    mask): nireports' ``plot_registration`` of one image, as a static reportlet."""
    mosaic, utils = _nireports()
    svgs = _views(mosaic, utils, image, mask, label, "contour", cuts, bbox)
    _write(out, lambda tmp: utils.compose_view(svgs, fg_svgs=None, out_file=tmp))


def masks_reportlet(image, masks, out, bbox) -> None:
    """The contours of several ``masks`` (one colour each) over ``image``, cuts through
    ``bbox``: nireports' ``plot_segs``, as its ``ROIsPlot`` interface draws them."""
    mosaic, utils = _nireports()
    svgs = mosaic.plot_segs(image_nii=_img(image), seg_niis=[_img(m) for m in masks],
                            bbox_nii=_img(bbox), masked=False, compress=False)
    _write(out, lambda tmp: utils.compose_view(svgs, fg_svgs=None, out_file=tmp))


def flicker_reportlet(fixed, moving, contour, out, labels=("fixed", "moving"),
                      cuts: int = CUTS) -> None:
    """``fixed`` and ``moving`` (already in ``fixed``'s grid) as a before/after flicker,
    ``contour`` drawn on both: nireports' ``plot_registration`` and ``compose_view``, as
    its ``SimpleBeforeAfterRPT`` draws them."""
    mosaic, utils = _nireports()
    views = [_views(mosaic, utils, img, contour, label, div, cuts)
             for img, div, label in ((fixed, "fixed-image", labels[0]),
                                     (moving, "moving-image", labels[1]))]
    _write(out, lambda tmp: utils.compose_view(views[0], views[1], out_file=tmp))


def run_qc_reportlets(maps: Mapping, out: Mapping, *, reportlet_cuts: int = CUTS, subject,
                      session, log_file=None, threads: int = 1) -> None:
    """Rule qc_reportlets: a session's preprocessing reportlets.

    ``maps``: ``qT1`` (scaled, native), ``native_mask`` (step 2c), ``NDI``,
    ``qT1_ndi``, ``MWF_ndi``, ``ndi_mask`` (step 4), ``qT1_crop``, ``crop_mask``,
    ``cerebellum`` (steps 5, 7), ``qT1_template`` (the qT1 map in MNI152),
    ``template_t1w`` and ``template_mask`` (the files of rule template_images); ``out``:
    one SVG per name of :data:`gamer_mril.layout.REPORTLETS`.
    """
    from . import templates
    from .jobs import step

    with step("qc_reportlets", inputs=dict(maps), outputs=list(out.values()),
              params={"reportlet_cuts": int(reportlet_cuts)},
              log_file=log_file, threads=threads, subject=subject, session=session) as s:
        contour_reportlet(maps["qT1"], maps["native_mask"], out["brainmask"],
                          label="brain mask", cuts=reportlet_cuts)
        for c, suffix in (("qT1", "T1map"), ("MWF", "MWFmap")):
            flicker_reportlet(maps["NDI"], maps[f"{c}_ndi"],
                              maps["ndi_mask"], out[f"coreg{suffix}"],
                              labels=("NDI", f"{c} in the NDI grid"), cuts=reportlet_cuts)
        template_mask = templates.template_brain_mask(maps["template_mask"])
        flicker_reportlet(templates.template_t1w(maps["template_t1w"]),
                          maps["qT1_template"], template_mask, out["template"],
                          labels=("MNI152 template", "qT1 in MNI152"), cuts=reportlet_cuts)
        contour_reportlet(maps["qT1_crop"], maps["cerebellum"], out["cerebellum"],
                          label="cerebellum removed", bbox=maps["crop_mask"], cuts=reportlet_cuts)
        for name, path in out.items():
            s.sidecar(path, {"Reportlet": name})


def run_relevance_reportlet(ndi, crop_mask, qmasks, chosen, out, *,
                            heatmap_level: int, subject, session, log_file=None,
                            threads: int = 1) -> None:
    """Rule relevance_reportlet: the chosen scenario's top-``heatmap_level`` mask over the
    session's NDI map (cropped grid; a contour per contrast for an individual map).
    ``qmasks``: the scenario stack of the session's level images."""
    import json

    from .assessment.masks import contrast_first, masks_from_levels
    from .jobs import step
    from .scenario_stack import scenario_volumes

    level = int(heatmap_level)
    scenario = int(json.loads(Path(chosen).read_text())["scenario"])
    with step("relevance_reportlet", inputs={"NDI": ndi, "mask": crop_mask,
                                             "chosen": chosen, "masks": qmasks},
              params={"heatmap_level": level, "scenario": scenario}, outputs=[out],
              log_file=log_file, threads=threads, subject=subject, session=session) as s:
        lvl, affine = scenario_volumes(qmasks, scenario)
        lvl = contrast_first(lvl)
        volumes = lvl if lvl.ndim == 4 else lvl[None]
        masks = [nib.Nifti1Image(m.astype(np.uint8), affine)
                 for m in masks_from_levels(volumes, [level])[0]]
        masks_reportlet(ndi, masks, out, bbox=crop_mask)
        s.sidecar(out, {"Reportlet": "relevance", "Scenario": scenario, "Level": int(level),
                        "Volumes": len(masks)})
