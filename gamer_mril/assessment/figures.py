"""The assessment's figures: Fig. 4 (voxel inverting), the correlation scatter plots
and Fig. 6 (group heatmaps over the MNI152 template)
(docs/method.md#73-voxel-inverting, #75-correlation-with-edss,
#76-template-space-and-group-heatmaps).

Every figure is drawn on a figure of its own (:func:`gamer_mril.figures.new_figure`) and
written atomically (:func:`gamer_mril.figures.save_png`); the statistics they show come in
as arguments, nothing is computed here.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import nibabel as nib
import numpy as np
import pandas as pd

from .. import templates
from ..figures import new_figure, save_png
from .masks import LEVELS


#: Scenarios of the three panels of Fig. 4, and a fourth for those beyond the paper
#: (docs/method.md#68-beyond-the-paper-scenarios-13-to-20); scenario 3 is drawn in each.
FIG4_PANELS = (
    ("(a) relevance from the attention weights", (1, 2, 3, 4)),
    ("(b) relevance from f(x), and scenario 3", (5, 6, 7, 8, 3)),
    ("(c) saliency and integrated gradients, and scenario 3", (9, 10, 11, 12, 3)),
    ("(d) beyond the paper (13-20), and scenario 3", tuple(range(13, 21)) + (3,)),
)

#: The scenario drawn in every panel for comparison (the paper's GAMER-MRIL map).
FIG4_REFERENCE = 3


def _scenario_colour(s: int):
    from matplotlib import colormaps

    return colormaps["tab20"]((int(s) - 1) % 20)


#: Half the width (in levels) of a random band drawn at a single level (controls at one N).
BAND_HALF_WIDTH = 3.0


def band_runs(sub: pd.DataFrame) -> list:
    """The rows of one scenario's levels (``sub``, sorted by N) with a random band, split
    into runs of consecutive levels: a band is drawn over each run, never across a level
    without controls."""
    has = sub["random_low"].notna().to_numpy()
    runs, start = [], None
    for k in range(len(sub) + 1):
        if k < len(sub) and has[k]:
            start = k if start is None else start
        elif start is not None:
            runs.append(sub.iloc[start:k])
            start = None
    return runs


def plot_inverting(df: pd.DataFrame, path, panels=FIG4_PANELS, names: Mapping | None = None,
                   title: str | None = None) -> None:
    """Fig. 4: AUC after inverting vs the top-N level, one panel per scenario group
    ((a) 1-4, (b) 5-8 and 3, (c) 9-12 and 3, (d) 13-20 and 3; a panel none of whose own
    scenarios is in ``df`` is left out, 3 where it is only the comparison not counting);
    the baseline AUC as a dashed line; where
    ``df`` has the random controls (``random_auc``, ``random_low``, ``random_high``)
    each scenario's random band shaded in its colour, its mean dotted, over each run of
    consecutive levels with controls (:func:`band_runs`; a level alone: a span of
    +-:data:`BAND_HALF_WIDTH` around it); ticks at the levels of ``df``; and where it has
    intervals (``auc_low``, ``auc_high``) thin bars beside each point. Scenarios absent
    from ``df`` are skipped. ``names``: optional {scenario: legend}."""
    present = set(df["scenario"].astype(int))
    kept = [(t, sc) for t, sc in panels
            if present & (set(sc[:-1]) if sc[-1] == FIG4_REFERENCE else set(sc))]
    panels = kept or list(panels[:1])
    fig = new_figure(5.0 * len(panels), 4.2)
    baseline = df["baseline_auc"].dropna()
    levels = sorted(int(n) for n in df["N"].unique()) or list(LEVELS)
    for p, (panel_title, scenarios) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), p + 1)
        for i, s in enumerate(scenarios):
            sub = df[df["scenario"] == s].sort_values("N")
            if sub.empty:
                continue
            label = (names or {}).get(s, f"scenario {s}")
            ax.plot(sub["N"], sub["auc"], marker="o", ms=4, color=_scenario_colour(s),
                    lw=2.2 if s == 3 else 1.4, label=label)
            if "auc_low" in sub and sub["auc_low"].notna().any():
                # the bootstrap intervals, side by side around each level
                x = sub["N"] + (i - (len(scenarios) - 1) / 2) * 0.8
                ax.vlines(x, sub["auc_low"], sub["auc_high"], color=_scenario_colour(s),
                          lw=0.8, alpha=0.45)
            if "random_low" in sub and sub["random_low"].notna().any():
                for band in band_runs(sub):
                    x = band["N"].to_numpy(float)
                    if len(band) == 1:      # controls at one level: a short span around it
                        x = x[0] + np.array([-BAND_HALF_WIDTH, BAND_HALF_WIDTH])
                        band = pd.concat([band, band])
                    ax.fill_between(x, band["random_low"], band["random_high"],
                                    color=_scenario_colour(s), alpha=0.12, lw=0)
                    ax.plot(x, band["random_auc"], ls=":", lw=0.9,
                            color=_scenario_colour(s))
        if len(baseline):
            ax.axhline(float(baseline.iloc[0]), ls="--", color="0.5", lw=1,
                       label="no inverting")
        if "baseline_auc_within" in df and df["baseline_auc_within"].notna().any():
            ax.axhline(float(df["baseline_auc_within"].dropna().iloc[0]), ls=":",
                       color="0.3", lw=1, label="no inverting, within models")
        ax.set_title(panel_title, fontsize=9)
        ax.set_xlabel("top N-th quantile mask")
        ax.set_ylabel("AUC")
        ax.set_xticks(levels)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7, loc="lower left")
    if title:      # each line wrapped to the figure's width (a single panel is narrow)
        width = max(40, int(14 * 5.0 * len(panels)))
        fig.suptitle("\n".join(textwrap.fill(line, width) for line in title.split("\n")),
                     fontsize=10)
    fig.tight_layout()
    save_png(fig, path)


def plot_correlations(values: Mapping, edss, path, stats: Mapping,
                      title: str | None = None) -> None:
    """Scatter plots of the mean normalized value in the mask vs EDSS, one per contrast.

    ``values``: {contrast: (S,) means}; ``edss``: (S,); ``stats``: {contrast: (rho, p)}
    printed in the titles (:func:`gamer_mril.assessment.correlation.correlation_table`'s).
    """
    edss = np.asarray(edss, dtype=np.float64).reshape(-1)
    fig = new_figure(4.0 * max(1, len(values)), 4.0)
    for c, (contrast, v) in enumerate(values.items()):
        v = np.asarray(v, dtype=np.float64).reshape(-1)
        if v.shape != edss.shape:
            raise ValueError(f"{contrast}: {v.size} values but {edss.size} EDSS scores")
        rho, p = stats[contrast]
        ax = fig.add_subplot(1, len(values), c + 1)
        ax.scatter(edss, v, s=14, color=_scenario_colour(2 * c + 1), alpha=0.8)
        rho_s = "n/a" if not np.isfinite(rho) else f"{rho:.3f}"
        p_s = "n/a" if not np.isfinite(p) else f"{p:.2g}"
        ax.set_title(f"{contrast}: rho = {rho_s}, p = {p_s}", fontsize=10)
        ax.set_xlabel("EDSS")
        ax.set_ylabel(f"mean normalized {contrast} in mask")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_png(fig, path)


def plot_heatmap(heatmap_img, template_img, path, title: str | None = None,
                 vmax: float | None = None, threshold: float = 1e-6,
                 display_mode: str = "ortho", cut_coords=None) -> None:
    """Fig. 6: a group heatmap over the MNI152 template (``nilearn.plotting.plot_stat_map``).

    ``heatmap_img``, ``template_img``: NIfTI images or paths (``template_img=None``: the
    2 mm template of :mod:`gamer_mril.templates`). Colour scale 0 .. ``vmax`` (default:
    the heatmap's maximum; the paper uses 0.65), voxels ``<= threshold`` transparent.
    """
    from nilearn import plotting

    if template_img is None:
        template_img = templates.template_t1w(2)
    img = nib.load(str(heatmap_img)) if not hasattr(heatmap_img, "affine") else heatmap_img
    data = np.asarray(img.get_fdata(), dtype=np.float64)
    if vmax is None:
        finite = data[np.isfinite(data)]
        vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    # Drawn on a figure of our own (Agg canvas, never registered with pyplot), so
    # nothing is left open and no global backend is touched.
    fig = new_figure(9.0, 3.6)
    plotting.plot_stat_map(
        img, bg_img=template_img, figure=fig, title=title, threshold=threshold,
        display_mode=display_mode, cut_coords=cut_coords, cmap="hot", vmin=0.0,
        vmax=vmax, symmetric_cbar=False, colorbar=True, black_bg=True, draw_cross=False,
        annotate=True)
    save_png(fig, path)


def plot_heatmap_grid(panels: Sequence, template_img, path, vmax: float | None = None,
                      title: str | None = None, threshold: float = 1e-6,
                      cut_coords=(0.0, -18.0, 18.0)) -> None:
    """Fig. 6 as one figure: ``panels`` is a list of rows, each a list of ``(title,
    heatmap image)``; every panel an orthogonal view over the template through the same
    MNI point ``cut_coords`` (mm), one colour scale 0 .. ``vmax`` (default: the largest
    value shown)."""
    from nilearn import plotting

    if template_img is None:
        template_img = templates.template_t1w(2)
    rows = [list(r) for r in panels]
    ncol = max(len(r) for r in rows)
    if vmax is None:
        vmax = max([float(np.nanmax(np.asarray(img.dataobj))) for r in rows
                    for _, img in r] + [0.0]) or 1.0
    fig = new_figure(6.0 * ncol, 2.6 * len(rows) + (0.4 if title else 0))
    for r, row in enumerate(rows):
        for c, (panel_title, img) in enumerate(row):
            ax = fig.add_subplot(len(rows), ncol, r * ncol + c + 1)
            plotting.plot_stat_map(
                img, bg_img=template_img, axes=ax, figure=fig, title=panel_title,
                threshold=threshold, display_mode="ortho", cut_coords=cut_coords,
                cmap="hot", vmin=0.0, vmax=vmax, symmetric_cbar=False, colorbar=True,
                black_bg=True, draw_cross=False, annotate=False)
    if title:
        fig.suptitle(title)
    save_png(fig, path)
