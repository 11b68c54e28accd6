"""Matplotlib figures off screen: a figure on the Agg canvas (no pyplot global state), saved atomically as PNG,
and the loss curves drawn from a CSV log. matplotlib is imported only when a figure is made."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from utils.fileio import atomic_path


def new_figure(width: float, height: float, constrained: bool = True):
    """A matplotlib Figure of `width` x `height` inches at 100 dpi on the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained" if constrained else None)
    FigureCanvasAgg(figure)
    return figure


def save_png(figure, path: str | Path, dpi: float | None = None) -> Path:
    """Write `figure` to `path` as PNG atomically, at `dpi` (default: the figure's own)."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    return Path(path)


def plot_curves(csv_path: str | Path, png_path: str | Path, panels: dict[str, Sequence[str]],
                x: str = "step") -> Path | None:
    """One subplot per panel title, each drawing the named CSV columns against `x`; written atomically.
    Returns None when the log has no rows yet."""
    frame = pd.read_csv(csv_path)
    if frame.empty:
        return None
    figure = new_figure(6 * len(panels), 4)
    for axis, (title, columns) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels.items()):
        for column in columns:
            axis.plot(frame[x], frame[column], label=column, linewidth=1)
        axis.set_title(title)
        axis.set_xlabel(x)
        axis.legend()
        axis.grid(alpha=0.3)
    return save_png(figure, png_path, dpi=80)
