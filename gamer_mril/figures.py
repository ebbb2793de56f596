"""The one figure helper of the package: a matplotlib figure on its own Agg canvas and
its atomic PNG file.

A figure made here is never registered with pyplot, so nothing is left open and no global
backend is touched; :func:`save_png` writes through a temporary file in the target's
folder (:func:`gamer_mril.io.atomic_path`), so a reader never sees half a PNG.
"""

from __future__ import annotations

from .io import atomic_path

#: Resolution of every figure the workflow writes.
DPI = 120


def new_figure(width: float, height: float):
    """A ``matplotlib.figure.Figure`` of ``width`` x ``height`` inches on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path) -> None:
    """Write ``fig`` as a PNG file at ``path``, atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(str(tmp), format="png")
