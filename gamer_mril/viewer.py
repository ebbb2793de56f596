"""The group heatmaps as an interactive viewer (docs/method.md#76-template-space-and-group-heatmaps):
nilearn's ``view_img`` (brainsprite, its JavaScript inlined), one viewer per volume of
the chosen scenario's heatmap, in one self-contained HTML page that works offline."""

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


def run_heatmap_viewer(chosen_path, heatmaps: Mapping, template, out, *, group: str,
                       log_file=None, threads: int = 1) -> None:
    """Rule heatmap_viewer: the chosen scenario's ``group`` heatmap (fraction of the
    group's sessions whose top-N mask covers each MNI152 voxel) in nilearn's viewer over
    the MNI152 T1w (``template``: its file, rule template_images); one viewer per contrast
    for an individual map. ``heatmaps``: {scenario: that group's heatmap}."""
    import nibabel as nib
    from nilearn.plotting import view_img

    from . import CONTRASTS
    from .io import atomic_write_text, sidecar_path
    from .jobs import step
    from .templates import template_t1w

    chosen = int(json.loads(Path(chosen_path).read_text())["scenario"])
    with step("heatmap_viewer", inputs={"chosen": chosen_path, "heatmap": heatmaps[chosen],
                                        "template": template},
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
        title = (f"Group heatmap of the chosen scenario {chosen} ({group} sessions): the "
                 f"fraction whose top-{facts.get('level', 'N')} mask covers each voxel")
        atomic_write_text(out, viewer_page(panels, title))
        s.sidecar(out, {"Scenario": chosen, "Group": group, "Volumes": names})
