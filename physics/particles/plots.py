"""Figures for particle systems: energy and interatomic-distance histograms, configuration grids.

Each function returns a matplotlib ``Figure`` (Agg backend) and does not close it: the caller logs or
saves it, then closes it (``plt.close(fig)``).  Non-finite values (exploded samples) never crash a plot:
they are left out of the histograms and counted in the legend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from physics.particles.metrics import interatomic_distances  # noqa: E402

__all__ = ["energy_histogram", "distance_histogram", "particle_grid"]

_REF_STYLE = dict(histtype="stepfilled", color="0.75", edgecolor="0.45", linewidth=0.8)


def _np(x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _panels(x: Mapping[str, Any] | Any, default: str = "model") -> dict[str, Any]:
    if isinstance(x, Mapping):
        return dict(x)
    return {default: x}


def _window(ref: np.ndarray, pad: float) -> tuple[float, float]:
    """The plotting window: the reference's range widened by ``pad`` times its width on each side."""
    if len(ref) == 0:
        return 0.0, 1.0
    lo, hi = float(ref.min()), float(ref.max())
    w = hi - lo if hi > lo else max(abs(lo), 1.0)
    return lo - pad * w, hi + pad * w


def _overlay(
    models: dict[str, np.ndarray], ref: np.ndarray, *, bins: int, lo: float, hi: float, xlabel: str, title: str,
    weights: Mapping[str, np.ndarray] | None = None,
):
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    edges = np.linspace(lo, hi, bins + 1)
    ref_f = ref[np.isfinite(ref)]
    if len(ref_f):
        ax.hist(ref_f, bins=edges, density=True, label=f"reference (n={len(ref)})", **_REF_STYLE)
    for name, v in models.items():
        finite = np.isfinite(v)
        inside = finite & (v >= lo) & (v <= hi)
        n_out, n_bad = int((finite & ~inside).sum()), int((~finite).sum())
        label = f"{name} (n={len(v)})"
        notes = []
        if n_out:
            notes.append(f"{n_out} outside window")
        if n_bad:
            notes.append(f"{n_bad} non-finite")
        if notes:
            label += ": " + ", ".join(notes)
        if inside.any():
            # density over the *whole* sample, so mass outside the window shows as a lower curve
            w = np.full(len(v), 1.0 / len(v)) if weights is None or name not in weights else weights[name]
            ax.hist(v[inside], bins=edges, weights=w[inside] / (edges[1] - edges[0]), histtype="step", linewidth=1.4,
                    label=label)
        else:
            ax.plot([], [], label=label)  # still listed in the legend
    ax.set_xlim(lo, hi)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def energy_histogram(
    e_model: Mapping[str, Any] | Any,
    e_ref: Any,
    *,
    bins: int = 80,
    window: tuple[float, float] | None = None,
    pad: float = 0.25,
    title: str = "",
    weights: Mapping[str, Any] | None = None,
):
    """Overlaid normalised energy histograms: the reference ``e_ref [M]`` filled grey, each model
    (``e_model`` an array ``[B]`` or ``{name: [B]}``) a line.  The x window is ``window`` or the
    reference's range widened by ``pad`` of its width on each side; model energies outside it (and
    non-finite ones) are not drawn but counted in the legend, and each model's curve is normalised over
    all its samples, so lost mass shows as a lower curve.  ``weights {name: [B]}`` (normalised, e.g.
    importance weights) weigh that model's samples instead of ``1 / B``.  One axis."""
    ref = _np(e_ref).reshape(-1)
    models = {k: _np(v).reshape(-1) for k, v in _panels(e_model).items()}
    lo, hi = window if window is not None else _window(ref[np.isfinite(ref)], pad)
    w = {k: _np(v).reshape(-1) for k, v in (weights or {}).items()}
    return _overlay(models, ref, bins=bins, lo=lo, hi=hi, xlabel="energy (kT)", title=title, weights=w)


def _distances(x: Any) -> np.ndarray:
    return _np(interatomic_distances(_np(x))).reshape(-1)


def distance_histogram(
    x_model: Mapping[str, Any] | Any,
    x_ref: Any,
    *,
    bins: int = 80,
    window: tuple[float, float] | None = None,
    title: str = "",
    weights: Mapping[str, Any] | None = None,
):
    """Overlaid normalised histograms of the interatomic distances (all pairs ``i < j``) of the reference
    ``x_ref [M, n, d]`` (filled grey) and each model (``x_model`` ``[B, n, d]`` or ``{name: [B, n, d]}``,
    a line).  The x window is ``window`` or ``[0, 1.1 * max reference distance]``; distances outside it
    and non-finite ones are counted in the legend.  ``weights {name: [B]}`` (normalised per configuration)
    weigh each configuration's distances.  One axis."""
    ref = _distances(x_ref)
    panels = _panels(x_model)
    models = {k: _distances(v) for k, v in panels.items()}
    w = {}
    for k, v in (weights or {}).items():
        n = _np(panels[k]).shape[1]
        pairs = n * (n - 1) // 2
        w[k] = np.repeat(_np(v).reshape(-1) / pairs, pairs)
    if window is None:
        rf = ref[np.isfinite(ref)]
        window = (0.0, 1.1 * float(rf.max()) if len(rf) and rf.max() > 0 else 1.0)
    return _overlay(models, ref, bins=bins, lo=window[0], hi=window[1], xlabel="interatomic distance", title=title,
                    weights=w)


def particle_grid(x: Any, *, title: str = "", max_panels: int = 16, cols: int = 4, labels: list[str] | None = None):
    """A grid of the first ``max_panels`` configurations of ``x [K, n, d]`` (``d`` = 2: scatter plots;
    ``d`` = 3: 3D scatter plots), each centred on its mean and drawn on a common scale.  One axis per
    configuration (a configuration with non-finite coordinates shows what is finite, titled as such);
    unused grid cells are removed.  ``labels`` (e.g. energies) title the panels."""
    a = _np(x)
    if a.ndim != 3 or a.shape[2] not in (2, 3):
        raise ValueError(f"configurations must have shape [K, n, 2 or 3], got {a.shape}")
    a = a[:max_panels]
    k, _, d = a.shape
    if k == 0:
        raise ValueError("no configurations to plot")
    cols = max(1, min(cols, k))
    rows = math.ceil(k / cols)
    centred = np.empty_like(a)
    for idx in range(k):  # centre on the mean of the finite particles
        ok = np.isfinite(a[idx]).all(axis=1)
        centred[idx] = a[idx] - (a[idx][ok].mean(axis=0) if ok.any() else 0.0)
    finite_vals = np.abs(centred[np.isfinite(centred)])
    lim = 1.1 * float(finite_vals.max()) if finite_vals.size and finite_vals.max() > 0 else 1.0
    fig = plt.figure(figsize=(2.8 * cols, 2.8 * rows))
    for idx in range(k):
        p = centred[idx]
        ok = np.isfinite(p).all(axis=1)
        if d == 2:
            ax = fig.add_subplot(rows, cols, idx + 1)
            ax.scatter(p[ok, 0], p[ok, 1], s=40, edgecolors="k", linewidths=0.5)
            ax.set_aspect("equal")
        else:
            ax = fig.add_subplot(rows, cols, idx + 1, projection="3d")
            ax.scatter(p[ok, 0], p[ok, 1], p[ok, 2], s=30, edgecolors="k", linewidths=0.4, depthshade=True)
            ax.set_zlim(-lim, lim)
            ax.set_zticks([])
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_xticks([])
        ax.set_yticks([])
        name = labels[idx] if labels is not None and idx < len(labels) else f"#{idx}"
        if not ok.all():
            name += f" ({int((~ok).sum())} non-finite)"
        ax.set_title(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
