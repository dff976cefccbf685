"""Symmetry test helpers for point-cloud networks, usable on your own models too.

The networks under test act on the concatenated layout of :class:`~moldiff.diffusion.spaces.PointCloudSpace`:
``fn(x [Ntot, pos_dims + F]) -> [Ntot, pos_dims + F']`` where the first ``pos_dims`` columns are positions
(equivariant) and the rest are features (invariant), and ``batch [Ntot]`` names each node's graph.

All randomness comes from an explicit (CPU) ``torch.Generator``; the global RNG is never touched.

Errors are measured normwise: ``max|actual - expected| <= atol + rtol * max|expected|``, separately for the
positions part and the features part.  Default tolerances depend on the dtype (see :func:`default_tolerances`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "default_tolerances",
    "random_rotation",
    "random_permutation_within_graphs",
    "assert_equivariant",
    "assert_batch_consistent",
]

_RTOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 3e-3, torch.bfloat16: 3e-2}


def default_tolerances(dtype: torch.dtype) -> tuple[float, float]:
    """``(atol, rtol)`` for comparing network outputs of ``dtype`` (float64: 1e-9 relative, float32: 1e-4)."""
    rtol = _RTOL.get(dtype, 1e-4)
    return rtol * 1e-2, rtol


def random_rotation(dtype: torch.dtype, generator: torch.Generator, reflect: bool = False,
                    device: torch.device | str | None = None, dim: int = 3) -> Tensor:
    """A Haar-random ``[dim, dim]`` orthogonal matrix with determinant +1 (or -1 when ``reflect``).

    QR of a Gaussian matrix with the signs of ``diag(R)`` moved into ``Q``; one column is flipped to fix the
    determinant.  Drawn in float64 on the CPU, then cast.
    """
    a = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r))[None, :]
    if (torch.linalg.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    return q.to(dtype=dtype, device=device)


def random_permutation_within_graphs(batch: Tensor, generator: torch.Generator) -> Tensor:
    """A permutation ``perm [Ntot]`` that only shuffles nodes inside each graph: ``batch[perm] == batch``."""
    u = torch.rand(batch.numel(), generator=generator, dtype=torch.float64).to(batch.device)
    shuffled = torch.argsort(batch.double() + 0.5 * u, stable=True)  # grouped by graph, random order within
    grouped = torch.argsort(batch, stable=True)  # grouped by graph, original order
    perm = torch.empty_like(grouped)
    perm[grouped] = shuffled
    return perm


def _check(name: str, actual: Tensor, expected: Tensor, pos_dims: int, atol: float, rtol: float) -> None:
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: output shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    for part, a, e in (("positions", actual[:, :pos_dims], expected[:, :pos_dims]),
                       ("features", actual[:, pos_dims:], expected[:, pos_dims:])):
        if e.numel() == 0:
            continue
        err = (a - e).abs().max().item()
        scale = e.abs().max().item()
        tol = atol + rtol * scale
        if not err <= tol:  # also catches NaN
            raise AssertionError(f"{name} failed on {part}: max abs error {err:.3e} > tol {tol:.3e} "
                                 f"(max |expected| {scale:.3e}, atol {atol:.1e}, rtol {rtol:.1e})")


def assert_equivariant(fn: Callable[[Tensor], Tensor], x: Tensor, batch: Tensor, *, pos_dims: int = 3,
                       generator: torch.Generator,
                       translation: Literal["invariant", "equivariant"] | None = "invariant",
                       atol: float | None = None, rtol: float | None = None) -> None:
    """Check ``fn(x [Ntot, pos_dims + F]) -> [Ntot, pos_dims + F']`` under the symmetries of point clouds.

    Positions (first ``pos_dims`` columns of input and output) must rotate with a random rotation and a
    random reflection, features must be invariant; shifting each graph by its own random vector must leave
    the output positions unchanged (``translation="invariant"``: displacements, eps, scores), shift them
    the same way (``"equivariant"``: denoised positions) or is not checked (``None``); permuting the nodes
    within each graph (``batch`` unchanged, so ``fn`` may close over it) must permute the output rows.
    ``fn`` must also be deterministic (call ``model.eval()``).  Raises ``AssertionError`` naming the failed
    transformation and the max error.
    """
    d_atol, d_rtol = default_tolerances(x.dtype)
    atol, rtol = d_atol if atol is None else atol, d_rtol if rtol is None else rtol
    pos, feat = x[:, :pos_dims], x[:, pos_dims:]
    y = fn(x)
    _check("repeat call (fn is not deterministic; eval mode?)", fn(x), y, pos_dims, atol, rtol)

    def with_pos(p: Tensor, rest: Tensor) -> Tensor:
        return torch.cat([p, rest], dim=1)

    for name, reflect in (("rotation", False), ("reflection", True)):
        rot = random_rotation(x.dtype, generator, reflect=reflect, device=x.device, dim=pos_dims)
        expected = with_pos(y[:, :pos_dims] @ rot.T, y[:, pos_dims:])
        _check(name, fn(with_pos(pos @ rot.T, feat)), expected, pos_dims, atol, rtol)

    if translation is not None:
        if translation not in ("invariant", "equivariant"):
            raise ValueError(f"translation must be 'invariant', 'equivariant' or None, got {translation!r}")
        num_graphs = int(batch.max()) + 1 if batch.numel() else 0
        scale = max(pos.abs().max().item() if pos.numel() else 0.0, 1.0)
        shift = (scale * torch.randn(num_graphs, pos_dims, generator=generator, dtype=torch.float64))
        shift = shift.to(dtype=x.dtype, device=x.device)[batch]
        y_pos = y[:, :pos_dims] + shift if translation == "equivariant" else y[:, :pos_dims]
        _check(f"translation ({translation})", fn(with_pos(pos + shift, feat)), with_pos(y_pos, y[:, pos_dims:]),
               pos_dims, atol, rtol)

    perm = random_permutation_within_graphs(batch, generator)
    _check("permutation", fn(x[perm]), y[perm], pos_dims, atol, rtol)


def assert_batch_consistent(fn_batched: Callable[[Tensor, Tensor, int], Tensor], xs: Sequence[Tensor], *,
                            pos_dims: int = 3, atol: float | None = None, rtol: float | None = None) -> None:
    """Running graphs batched together must equal running each alone.

    ``fn_batched(x [Ntot, D], batch [Ntot], num_graphs) -> [Ntot, D']``; ``xs`` are per-graph ``[n_g, D]``.
    Use graphs of different sizes so that padding (dense models) or segment boundaries are exercised.
    """
    d_atol, d_rtol = default_tolerances(xs[0].dtype)
    atol, rtol = d_atol if atol is None else atol, d_rtol if rtol is None else rtol
    device = xs[0].device
    sizes = torch.tensor([len(x) for x in xs], device=device)
    batch = torch.repeat_interleave(torch.arange(len(xs), device=device), sizes)
    y = fn_batched(torch.cat(list(xs)), batch, len(xs))
    start = 0
    for g, x in enumerate(xs):
        alone = fn_batched(x, torch.zeros(len(x), dtype=torch.long, device=device), 1)
        _check(f"batch consistency of graph {g} ({len(x)} nodes, batched vs alone)", y[start : start + len(x)],
               alone, pos_dims, atol, rtol)
        start += len(x)
