"""Log-likelihood through the probability-flow ODE (Song et al. 2021, FFJORD's trace estimator).

Integrating ``dx/dt = v(x, t)`` from ``t_min`` to 1 together with ``d delta/dt = div v`` gives

    log p_{t_min}(x) = log p_prior(x_1) + delta(1).

The divergence is exact (one backward pass per dimension) for small Euclidean states and the Hutchinson
estimator ``E[z^T (dv/dx) z]`` otherwise, with one probe per sample drawn in the state's space (so for
zero-CoM point clouds it is the divergence on the subspace the density lives on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .denoiser import Denoiser
from .ode import integrate_ode
from .spaces import EuclideanSpace

__all__ = ["LikelihoodResult", "log_likelihood", "divergence_exact", "divergence_hutchinson"]


@dataclass
class LikelihoodResult:
    """Per-sample results, all ``[B]`` in nats, except ``z`` (the latent at ``t = 1``) and ``nfe``."""

    logp: Tensor
    prior_logp: Tensor
    delta_logp: Tensor
    z: Tensor
    nfe: int
    dof: Tensor

    def bits_per_dim(self) -> Tensor:
        return -self.logp / (self.dof * math.log(2))


def divergence_exact(v: Tensor, x: Tensor) -> Tensor:
    """Exact ``sum_i dv_i/dx_i`` per sample for Euclidean ``x [B, *]`` (``v`` computed from ``x`` with grad)."""
    flat_v = v.reshape(v.shape[0], -1)
    div = torch.zeros(v.shape[0], device=v.device, dtype=v.dtype)
    for i in range(flat_v.shape[1]):
        (g,) = torch.autograd.grad(flat_v[:, i].sum(), x, retain_graph=True)
        div = div + g.reshape(g.shape[0], -1)[:, i]
    return div


def divergence_hutchinson(v: Tensor, x: Tensor, probe: Tensor, space) -> Tensor:
    """Unbiased estimate ``z^T (dv/dx) z`` per sample, for a probe ``z`` with ``E[z z^T] = I`` on the space."""
    (vjp,) = torch.autograd.grad(v, x, grad_outputs=probe)
    return space.sum(vjp * probe)


def log_likelihood(
    model: Denoiser,
    x: Tensor,
    *,
    divergence: str = "auto",
    method: str = "rk45",
    steps: int = 200,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_min: float | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> LikelihoodResult:
    """``log p_{t_min}(x)`` per sample under the model's probability-flow ODE.

    Args:
        model: the denoiser (its process and space are used).
        x: data ``[B, *]`` (Euclidean) or ``[N, D]`` (point clouds, already zero-CoM).
        divergence: ``exact``, ``hutchinson`` (Rademacher probe), or ``auto`` (exact when the state is
            Euclidean with at most 16 dimensions).
        method: ``rk45`` (adaptive) or ``euler`` / ``heun`` with ``steps`` uniform steps.
        t_min: lower integration limit (default: the process's ``t_min``).
    """
    space = model.space
    proc = model.process
    euclid = isinstance(space, EuclideanSpace)
    if divergence == "auto":
        divergence = "exact" if euclid and x[0].numel() <= 16 else "hutchinson"
    if divergence not in ("exact", "hutchinson"):
        raise ValueError(f"unknown divergence {divergence!r}; choose exact, hutchinson or auto")
    if divergence == "exact" and not euclid:
        raise ValueError("exact divergence is implemented for Euclidean states only; use hutchinson")
    lo = proc.t_min if t_min is None else t_min
    n = space.num_samples(x)
    numel = x.numel()
    probe = None
    if divergence == "hutchinson":
        r = torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1
        probe = space.project(r)

    def f(y: Tensor, t: Tensor) -> Tensor:
        xs = y[:numel].reshape(x.shape)
        with torch.enable_grad():
            xs = xs.detach().requires_grad_(True)
            vel = model.velocity(xs, model.batch_time(t, xs))
            if divergence == "exact":
                div = divergence_exact(vel, xs)
            else:
                div = divergence_hutchinson(vel, xs, probe, space)
        return torch.cat([vel.detach().reshape(-1), div.detach()])

    y0 = torch.cat([x.detach().reshape(-1), torch.zeros(n, device=x.device, dtype=x.dtype)])
    if method == "rk45":
        ts = torch.tensor([lo, 1.0], device=x.device, dtype=x.dtype)
    else:
        ts = torch.linspace(lo, 1.0, steps + 1, device=x.device, dtype=x.dtype)
    sol = integrate_ode(f, y0, ts, method=method, rtol=rtol, atol=atol, progress=progress)
    z = sol.x[:numel].reshape(x.shape)
    delta = sol.x[numel:]
    prior = proc.prior_logp(z, space)
    return LikelihoodResult(
        logp=prior + delta, prior_logp=prior, delta_logp=delta, z=z, nfe=sol.nfe, dof=space.dof(x)
    )
