"""Training losses.  Each returns one value per sample (NVlabs/edm style); the trainer takes the mean."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .denoiser import PREDICTION_KINDS
from .processes import FlowPath, Process
from .spaces import EuclideanSpace, Space

__all__ = ["sample_time", "denoising_loss", "flow_matching_loss"]


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
    same objective as ``eps``), ``velocity`` the conditional velocity ``alpha' x0 + sigma' eps`` (with a
    :class:`FlowPath` and independent pairs: I-CFM with a Gaussian source).  The mean runs over the sample's degrees of freedom (``space.dof``).
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
    elif kind == "velocity":
        da, ds = process.marginal_derivative(t)
        err = pred - (space.expand(da, x0) * x0 + space.expand(ds, x0) * eps)
    else:
        _, sigma = process.marginal(t)
        err = space.expand(sigma, x0) * pred + eps
    return space.mean(err.float() ** 2)


def flow_matching_loss(
    net: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    x1: Tensor,
    path: FlowPath,
    *,
    space: Space | None = None,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
) -> Tensor:
    """Conditional flow matching, per sample ``[B]``: ``|net(x_t, t) - u_t(x_t | x0, x1)|^2`` averaged over the
    sample's degrees of freedom, ``t ~ U[0, 1]``.

    ``x0`` are data, ``x1`` their paired source samples (independent pairs: I-CFM; pairs from an OT plan:
    OT-CFM; from an entropic plan with ``path.noise="bridge"``: SB-CFM -- see
    :mod:`moldiff.diffusion.couplings`).  Both have the same shape and live in ``space``.
    """
    space = space or EuclideanSpace()
    if x0.shape != x1.shape:
        raise ValueError(f"flow_matching_loss: data {tuple(x0.shape)} and source {tuple(x1.shape)} differ in shape")
    n = space.num_samples(x0)
    if t is None:
        t = torch.rand(n, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t, u = path.conditional(x0, x1, t, space, generator)
    err = net(x_t, t) - u
    return space.mean(err.float() ** 2)
