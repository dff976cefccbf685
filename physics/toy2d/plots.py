"""Scatter-plot grids of 2D samples."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402

__all__ = ["scatter_grid"]


def scatter_grid(panels: dict[str, Tensor], *, title: str = "", lim: float = 4.5):
    """One square scatter panel per entry (``name -> [n, 2]``); returns the figure."""
    k = len(panels)
    cols = min(k, 4)
    rows = math.ceil(k / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[k:]:
        ax.axis("off")
    for ax, (name, pts) in zip(axes.flat, panels.items()):
        p = pts.detach().cpu().float().numpy()
        ax.scatter(p[:, 0], p[:, 1], s=1.5, alpha=0.5, linewidths=0)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
