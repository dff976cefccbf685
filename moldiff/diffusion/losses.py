"""Training losses.  Each returns one value per sample (NVlabs/edm style); the trainer takes the mean."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .denoiser import Denoiser
from .processes import FlowPath, Process
from .spaces import EuclideanSpace, Space

__all__ = ["sample_time", "denoising_loss", "flow_matching_loss", "TIME_DISTRIBUTIONS", "WEIGHTINGS"]


TIME_DISTRIBUTIONS = ("uniform", "lognormal", "beta")
WEIGHTINGS = ("kind", "edm")


def sample_time(process: Process, n: int, *, distribution: str = "uniform", p_mean: float = -1.2, p_std: float = 1.2,
                beta_a: float = 1.0, beta_b: float = 2.0, generator=None, device=None, dtype=torch.float32) -> Tensor:
    """Training times ``[n]``.

    ``uniform``: uniform on ``[t_min, 1]``, or uniform over the levels of a discrete schedule.  ``lognormal``:
    EDM's noise-level distribution, ``ln(sigma / alpha) ~ N(p_mean, p_std^2)`` (Karras et al. 2022: -1.2, 1.2),
    mapped to times by :meth:`Process.time_at` (levels beyond the process's range land on its ends).  ``beta``:
    ``t ~ Beta(beta_a, beta_b)`` on ``[t_min, 1]`` (continuous processes), drawn by the inverse CDF of a uniform
    draw so the generator alone fixes it; with ``t = 0`` the data, ``beta_a < beta_b`` puts more training
    near the data -- ``Beta(1, 2)`` is SemlaFlow's and Megalodon's ``Beta(2, 1)`` in their time convention.
    """
    if distribution not in TIME_DISTRIBUTIONS:
        raise ValueError(f"unknown time distribution {distribution!r}; choose one of {TIME_DISTRIBUTIONS}")
    if distribution == "lognormal":
        z = torch.randn(n, generator=generator, device=device, dtype=torch.float64)
        return process.time_at(torch.exp(p_mean + p_std * z)).to(dtype)
    if distribution == "beta":
        from scipy.special import betaincinv

        if not (beta_a > 0 and beta_b > 0):
            raise ValueError(f"beta time distribution needs beta_a, beta_b > 0, got {beta_a}, {beta_b}")
        if process.num_levels:
            raise ValueError("the beta time distribution is for continuous processes, not a discrete schedule")
        u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        t = torch.from_numpy(betaincinv(beta_a, beta_b, u.cpu().numpy())).to(u)
        return (process.t_min + (1.0 - process.t_min) * t).to(dtype)
    if process.num_levels:
        T = process.num_levels
        first = round(process.t_min * T)
        levels = torch.randint(first, T + 1, (n,), generator=generator, device=device)
        return levels.to(dtype) / T
    u = torch.rand(n, generator=generator, device=device, dtype=dtype)
    return process.t_min + (1.0 - process.t_min) * u


def denoising_loss(
    model: Denoiser,
    x0: Tensor,
    *,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
    cond=None,
    distribution: str = "uniform",
    p_mean: float = -1.2,
    p_std: float = 1.2,
    beta_a: float = 1.0,
    beta_b: float = 2.0,
    weighting: str = "kind",
) -> Tensor:
    """Denoising score matching through ``model`` (its process, space, prediction kind and preconditioning),
    per sample ``[B]``.

    ``weighting="kind"``: the mean squared error of the model's raw prediction against the target of its
    declared kind -- ``eps`` the noise (Ho et al.), ``x0`` the clean state, ``score`` the conditional score
    ``-eps / sigma`` scaled by ``sigma`` (Song's ``lambda = sigma^2``, i.e. the ``eps`` objective), ``velocity``
    ``alpha' x0 + sigma' eps`` (with a :class:`FlowPath` and independent pairs: I-CFM with a Gaussian source).
    ``weighting="edm"`` (a preconditioned model): EDM's ``lambda(s) |D - x0|^2`` with ``lambda = 1 / c_out^2``,
    the unit-variance target of the raw network at every noise level.  Times: ``t`` if given, else drawn from
    ``distribution`` (with ``p_mean``, ``p_std``, ``beta_a``, ``beta_b``; :func:`sample_time`).  ``cond`` is handed to the model unchanged.  The mean runs over the
    sample's degrees of freedom (``space.dof``).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown loss weighting {weighting!r}; choose one of {WEIGHTINGS}")
    if weighting == "edm" and model.precond is None:
        raise ValueError("weighting='edm' is EDM's weight for a preconditioned denoiser (give the Denoiser precond=)")
    process, space, kind = model.process, model.space, model.kind
    n = space.num_samples(x0)
    if t is None:
        t = sample_time(process, n, distribution=distribution, p_mean=p_mean, p_std=p_std, beta_a=beta_a,
                        beta_b=beta_b, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t, eps = process.perturb(x0, t, space, generator)
    pred = model(x_t, t, cond)
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
    loss = space.mean(err.float() ** 2)
    if weighting == "edm":
        loss = loss * model.precond.loss_weight(process.noise_level(t)).to(loss)
    return loss


def flow_matching_loss(
    net: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    x1: Tensor,
    path: FlowPath,
    *,
    space: Space | None = None,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
    cond=None,
) -> Tensor:
    """Conditional flow matching, per sample ``[B]``: ``|net(x_t, t) - u_t(x_t | x0, x1)|^2`` averaged over the
    sample's degrees of freedom, ``t ~ U[0, 1]``.

    ``x0`` are data, ``x1`` their paired source samples (independent pairs: I-CFM; pairs from an OT plan:
    OT-CFM; from an entropic plan with ``path.noise="bridge"``: SB-CFM -- see
    :mod:`moldiff.diffusion.couplings`).  Both have the same shape and live in ``space``.  ``cond`` (a conditional
    network) is handed to ``net`` unchanged.
    """
    space = space or EuclideanSpace()
    if x0.shape != x1.shape:
        raise ValueError(f"flow_matching_loss: data {tuple(x0.shape)} and source {tuple(x1.shape)} differ in shape")
    n = space.num_samples(x0)
    if t is None:
        t = torch.rand(n, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t, u = path.conditional(x0, x1, t, space, generator)
    err = (net(x_t, t) if cond is None else net(x_t, t, cond)) - u
    return space.mean(err.float() ** 2)
