"""The group heatmaps as an interactive viewer (docs/method.md#76-template-space-and-group-heatmaps):
nilearn's ``view_img`` (brainsprite, its JavaScript inlined), one viewer per volume of
the chosen scenario's heatmap, then (when given) one per volume of the t maps of the group
tests in MNI152 (docs/method.md#77-group-statistics-in-mni152) of the chosen scenario and
of the input maps, in one self-contained HTML page that works offline."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np


def viewer_page(panels, title: str) -> str:
    """One HTML page holding each ``(heading, nilearn HTML document)`` of ``panels`` in
    an iframe (the documents are complete pages; ``srcdoc`` keeps them inline)."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             "</title></head><body style='font-family: sans-serif'>",
             f"<h2>{html.escape(title)}</h2>"]
    for heading, doc in panels:
        parts.append(f"<h3>{html.escape(heading)}</h3>")
        parts.append(doc.get_iframe(width=820, height=420))
    parts.append("</body></html>")
    return "\n".join(parts)


def t_panels(stats: Mapping, background, alpha: float = 0.05) -> list:
    """``(heading, viewer)`` of each volume of each t map of ``stats`` ({name: (t image
    file, FWE-p image file)}): the t where the FWE p is below ``alpha``, or the whole t
    map, saying so, where no voxel is."""
    import nibabel as nib
    from nilearn.plotting import view_img

    from . import CONTRASTS

    panels = []
    for name, (t_path, p_path) in stats.items():
        t_img = nib.load(str(t_path))
        t = np.asarray(t_img.dataobj, dtype=np.float32)
        p = np.asarray(nib.load(str(p_path)).dataobj, dtype=np.float32)
        ts, ps = (np.moveaxis(t, -1, 0), np.moveaxis(p, -1, 0)) if t.ndim == 4 else (t[None], p[None])
        names = list(CONTRASTS[:len(ts)]) if t.ndim == 4 else [None]
        for vol, pv, contrast in zip(ts, ps, names):
            shown = np.where(pv < alpha, vol, 0.0)
            n = int((pv < alpha).sum())
            label = f"{name}{f', {contrast}' if contrast else ''}"
            note = f"{n} voxels with FWE p < {alpha}" if n else \
                f"no voxel with FWE p < {alpha}: the whole t map"
            doc = view_img(nib.Nifti1Image(shown if n else vol, t_img.affine),
                           bg_img=background, threshold=1e-6, cmap="cold_hot",
                           symmetric_cmap=True, black_bg=True, title=f"t, {label}")
            panels.append((f"Severe vs mild, t, {label}: {note}", doc))
    return panels


def run_heatmap_viewer(chosen_path, heatmaps: Mapping, template, out, *, group: str,
                       relevance_stats: Mapping | None = None,
                       input_stats: Mapping | None = None, log_file=None,
                       threads: int = 1) -> None:
    """Rule heatmap_viewer: the chosen scenario's ``group`` heatmap (fraction of the
    group's sessions whose top-N mask covers each MNI152 voxel) in nilearn's viewer over
    the MNI152 T1w (``template``: its file, rule template_images); one viewer per contrast
    for an individual map. ``heatmaps``: {scenario: that group's heatmap}. Then the t
    maps of the group tests (:func:`t_panels`): ``relevance_stats`` {scenario: (t, FWE p)
    files}, the chosen scenario's shown; ``input_stats`` {contrast: (t, FWE p) files}."""
    import nibabel as nib
    from nilearn.plotting import view_img

    from . import CONTRASTS
    from .io import atomic_write_text, sidecar_path
    from .jobs import step
    from .templates import template_t1w

    chosen = int(json.loads(Path(chosen_path).read_text())["scenario"])
    stats = {**({f"scenario {chosen}": relevance_stats[chosen]} if relevance_stats else {}),
             **{f"input map {c}": v for c, v in (input_stats or {}).items()}}
    with step("heatmap_viewer", inputs={"chosen": chosen_path, "heatmap": heatmaps[chosen],
                                        "template": template,
                                        "stats": [f for v in stats.values() for f in v]},
              params={"group": group, "scenario": chosen},
              outputs=[out], log_file=log_file, threads=threads) as s:
        img = nib.load(heatmaps[chosen])
        facts = json.loads(sidecar_path(heatmaps[chosen]).read_text()).get("Facts", {})
        data = np.asarray(img.dataobj, dtype=np.float32)
        volumes = np.moveaxis(data, -1, 0) if data.ndim == 4 else data[None]
        names = list(CONTRASTS) if data.ndim == 4 else ["combined"]
        background = template_t1w(template)
        panels = []
        for name, vol in zip(names, volumes):
            doc = view_img(nib.Nifti1Image(vol, img.affine), bg_img=background,
                           threshold=1e-6, cmap="hot", symmetric_cmap=False, vmin=0.0,
                           vmax=1.0, black_bg=True,
                           title=f"scenario {chosen}, {group}, {name}")
            panels.append((f"{name}: peak {float(vol.max()):.2f} of "
                           f"{facts.get('n_sessions', '?')} sessions", doc))
        panels += t_panels(stats, background)
        title = (f"Group heatmap of the chosen scenario {chosen} ({group} sessions): the "
                 f"fraction whose top-{facts.get('level', 'N')} mask covers each voxel")
        atomic_write_text(out, viewer_page(panels, title))
        s.sidecar(out, {"Scenario": chosen, "Group": group, "Volumes": names,
                        "TMaps": list(stats)})
