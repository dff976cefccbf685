"""Training losses.  Each returns one value per sample (NVlabs/edm style); the trainer takes the mean."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .denoiser import PREDICTION_KINDS
from .processes import Process
from .spaces import EuclideanSpace, Space

__all__ = ["sample_time", "denoising_loss"]


def sample_time(process: Process, n: int, *, generator=None, device=None, dtype=torch.float32) -> Tensor:
    """Training times ``[n]``: uniform on ``[t_min, 1]``, or uniform over the levels of a discrete schedule."""
    if process.num_levels:
        T = process.num_levels
        first = round(process.t_min * T)
        levels = torch.randint(first, T + 1, (n,), generator=generator, device=device)
        return levels.to(dtype) / T
    u = torch.rand(n, generator=generator, device=device, dtype=dtype)
    return process.t_min + (1.0 - process.t_min) * u


def denoising_loss(
    net: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    process: Process,
    *,
    kind: str = "eps",
    space: Space | None = None,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
) -> Tensor:
    """Denoising score matching, per sample ``[B]``: mean squared error of ``net(x_t, t)`` against its target.

    ``kind="eps"`` regresses the noise (Ho et al.; EDM's L2 loss), ``x0`` the clean state, ``score`` the
    conditional score ``-eps / sigma`` scaled by ``sigma`` (Song's ``lambda = sigma^2`` weighting, i.e. the
    same objective as ``eps``).  The mean runs over the sample's degrees of freedom (``space.dof``).
    """
    if kind not in PREDICTION_KINDS:
        raise ValueError(f"unknown prediction kind {kind!r}; choose one of {PREDICTION_KINDS}")
    space = space or EuclideanSpace()
    n = space.num_samples(x0)
    if t is None:
        t = sample_time(process, n, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t, eps = process.perturb(x0, t, space, generator)
    pred = net(x_t, t)
    if kind == "eps":
        err = pred - eps
    elif kind == "x0":
        err = pred - x0
    else:
        _, sigma = process.marginal(t)
        err = space.expand(sigma, x0) * pred + eps
    return space.mean(err.float() ** 2)
