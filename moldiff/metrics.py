"""Distribution metrics shared by every domain (pure functions, tested on known answers)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["wasserstein2", "count_outliers", "text_table"]


def text_table(rows: list[tuple[str, str]], counts: dict[str, int] | None = None, *, indent: str = "",
               counts_title: str = "failures:") -> str:
    """The one plain-text metrics table: ``(name, value)`` rows with the names aligned and the values right-aligned,
    then, if any, ``counts`` (e.g. failures by reason) under ``counts_title``."""
    if not rows and not counts:
        return ""
    lines = []
    if rows:
        w = max(len(k) for k, _ in rows)
        lines += [f"{indent}{k:<{w}}  {v:>10}" for k, v in rows]
    if counts:
        lines.append(counts_title)
        fw = max(len(k) for k in counts)
        lines += [f"{indent}  {k:<{fw}}  {v:>8d}" for k, v in sorted(counts.items())]
    return "\n".join(lines)


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64).reshape(len(x), -1)


def wasserstein2(x: Tensor | np.ndarray, y: Tensor | np.ndarray, *, num_itermax: int = 10_000_000) -> float:
    """Exact Wasserstein-2 distance between two empirical distributions with uniform weights
    (``sqrt`` of POT's ``ot.emd2`` with squared Euclidean cost).  ``x [n, d]``, ``y [m, d]``."""
    import ot

    a, b = _np(x), _np(y)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"dimension mismatch: {a.shape[1]} vs {b.shape[1]}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    M = ot.dist(a, b, metric="sqeuclidean")
    cost = ot.emd2(np.full(len(a), 1 / len(a)), np.full(len(b), 1 / len(b)), M, numItermax=num_itermax)
    return float(np.sqrt(max(cost, 0.0)))


def count_outliers(samples: Tensor | np.ndarray, reference: Tensor | np.ndarray, distance: float) -> int:
    """How many of ``samples [n, d]`` lie farther than ``distance`` from every point of ``reference [m, d]`` (a
    held-out data set): the samples a sampler flung off the data's support, which one W2 can hide."""
    a = torch.as_tensor(_np(samples), dtype=torch.float64)
    b = torch.as_tensor(_np(reference), dtype=torch.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need [n, d] samples and [m, d] reference points, got {tuple(a.shape)}, {tuple(b.shape)}")
    nearest = torch.cat([torch.cdist(chunk, b).min(1).values for chunk in a.split(4096)])
    return int(((nearest > distance) | ~torch.isfinite(nearest)).sum())
