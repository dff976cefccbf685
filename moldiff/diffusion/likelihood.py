"""Log-likelihood through the probability-flow ODE (Song et al. 2021, FFJORD's trace estimator).

Integrating ``dx/dt = v(x, t)`` from ``t_min`` to 1 together with ``d delta/dt = div v`` gives

    log p_{t_min}(x) = log p_prior(x_1) + delta(1).

The divergence is exact (one backward pass per dimension of one sample) or the Hutchinson estimator
``E[z^T (dv/dx) z]`` with one probe per sample drawn in the state's space.  For zero-CoM point clouds both
are the divergence on the subspace the density lives on: the exact one is the trace of the Jacobian of
``x -> v(P x)`` with ``P`` the projection, which equals the trace of ``P J P`` because ``v`` maps into the
subspace.  Importance weights (effective sample size) need the exact one: Hutchinson's estimate of
``log p`` is unbiased but its exponential is not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .denoiser import Denoiser
from .ode import integrate_ode
from .spaces import EuclideanSpace, node_slots

__all__ = ["LikelihoodResult", "log_likelihood", "sample_with_log_likelihood", "divergence_exact", "divergence_exact_vmap",
           "divergence_hutchinson", "point_cloud_basis", "DIVERGENCES"]

#: divergence estimators: exact (a loop of backward passes), exact_vmap (the same, batched by torch.func; point
#: clouds), hutchinson (one Rademacher probe per sample, unbiased)
DIVERGENCES = ("exact", "exact_vmap", "hutchinson")


@dataclass
class LikelihoodResult:
    """Per-sample results, all ``[B]`` in nats, except ``z`` (the latent at ``t = 1``), ``x`` and ``nfe``."""

    logp: Tensor
    prior_logp: Tensor
    delta_logp: Tensor
    z: Tensor
    nfe: int
    dof: Tensor
    #: the samples, for :func:`sample_with_log_likelihood` (``None`` for :func:`log_likelihood`)
    x: Tensor | None = None

    def bits_per_dim(self) -> Tensor:
        return -self.logp / (self.dof * math.log(2))


def divergence_exact(v: Tensor, x: Tensor, space=None) -> Tensor:
    """Exact ``sum_i dv_i/dx_i`` per sample (``v`` computed from ``x`` with grad), one backward pass per basis
    vector: Euclidean ``x [B, *]`` (one per dimension of a sample) or a :class:`PointCloudSpace` ``x [N, D]``
    (:func:`point_cloud_basis`: ``(n_max - 1) d + n_max F`` passes, all graphs at once)."""
    if space is not None and not isinstance(space, EuclideanSpace):
        div = torch.zeros(space.num_graphs, device=v.device, dtype=v.dtype)
        for e in point_cloud_basis(space, x):
            (g,) = torch.autograd.grad((v * e).sum(), x, retain_graph=True)
            div = div + space.sum(g * e)
        return div
    flat_v = v.reshape(v.shape[0], -1)
    div = torch.zeros(v.shape[0], device=v.device, dtype=v.dtype)
    for i in range(flat_v.shape[1]):
        (g,) = torch.autograd.grad(flat_v[:, i].sum(), x, retain_graph=True)
        div = div + g.reshape(g.shape[0], -1)[:, i]
    return div


def point_cloud_basis(space, x: Tensor) -> list[Tensor]:
    """Orthonormal bases of every graph's state space, stacked across graphs: a list of ``[N, D]`` tensors ``e_k``,
    each holding the ``k``-th basis vector of every graph (zero for graphs with fewer), so that
    ``sum_k e_k^T J e_k`` is each graph's trace of ``J`` on the space.

    Position columns live in the zero-CoM subspace: the Helmert vectors ``h_k = (1, .., 1, -k, 0, ..) /
    sqrt(k (k + 1))`` over the graph's nodes (``k = 1 .. n - 1``) in each coordinate -- ``(n - 1) d`` vectors,
    ``d`` fewer per graph than the unit vectors of all coordinates.  Free feature columns take the unit vectors."""
    counts = space.counts.to(x.device)
    slot = node_slots(space.batch, counts)
    n_max = int(counts.max()) if counts.numel() else 0
    size = counts[space.batch]
    P, D = space.pos_dims, x.shape[1]
    out = []
    for k in range(1, n_max):
        h = torch.where(slot < k, 1.0, torch.where(slot == k, -float(k), 0.0)) * (size > k)
        h = (h / math.sqrt(k * (k + 1))).to(x.dtype)
        for d in range(P):
            e = torch.zeros_like(x)
            e[:, d] = h
            out.append(e)
    for k in range(n_max if D > P else 0):
        sel = (slot == k).to(x.dtype)
        for d in range(P, D):
            e = torch.zeros_like(x)
            e[:, d] = sel
            out.append(e)
    return out


def divergence_exact_vmap(fn, x: Tensor, space, chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
    """``(v, div)`` for ``v = fn(x)`` on a :class:`PointCloudSpace`: the same trace as :func:`divergence_exact`,
    with the backward passes batched over the basis vectors by ``torch.func.vmap`` (``chunk_size`` of them at a
    time; all at once by default).  One vectorised pass instead of a loop, meant for GPUs, where one backward
    pass leaves the device idle (not measured: no GPU was lent).  On this project's CPU the loop is faster
    (``benchmarks/results/exact_divergence.md``: 2x on DW4, 7.6x on LJ13; ``chunk_size=d`` on LJ13 with an EGNN
    took over 21 GB).  ``fn`` must be vmap-compatible (no in-place writes into a tensor made inside it from a
    batched one, no data-dependent Python control flow)."""
    from torch.func import vjp, vmap

    basis = torch.stack(point_cloud_basis(space, x))  # [K, N, D]
    v, pullback = vjp(fn, x)
    (g,) = vmap(pullback, chunk_size=chunk_size)(basis)
    return v, space.sum((g * basis).sum(0))


def divergence_hutchinson(v: Tensor, x: Tensor, probe: Tensor, space) -> Tensor:
    """Unbiased estimate ``z^T (dv/dx) z`` per sample, for a probe ``z`` with ``E[z z^T] = I`` on the space."""
    (vjp,) = torch.autograd.grad(v, x, grad_outputs=probe)
    return space.sum(vjp * probe)


def _resolve_divergence(divergence: str, x: Tensor, space) -> str:
    euclid = isinstance(space, EuclideanSpace)
    if divergence == "auto":
        per_sample = x[0].numel() if euclid else x.numel() / space.num_samples(x)
        divergence = "exact" if per_sample <= 16 else "hutchinson"
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; choose one of {', '.join(DIVERGENCES)} or auto")
    if divergence == "exact_vmap" and euclid:
        raise ValueError("divergence 'exact_vmap' is for point clouds; use 'exact' for Euclidean states")
    return divergence


def _integrate_with_divergence(model: Denoiser, x: Tensor, ts: Tensor, divergence: str, method: str, rtol: float,
                               atol: float, generator, progress: bool, cond=None):
    """Integrate ``(x, delta)`` with ``dx/dt = v``, ``d delta/dt = div v`` along ``ts``; returns the final
    ``(x, delta [B], nfe)``."""
    space = model.space
    n, numel = space.num_samples(x), x.numel()
    probe = None
    if divergence == "hutchinson":
        r = torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1
        probe = space.project(r)

    def f(y: Tensor, t: Tensor) -> Tensor:
        xs = y[:numel].reshape(x.shape)
        with torch.enable_grad():
            xs = xs.detach().requires_grad_(True)
            tb = model.batch_time(t, xs)
            if divergence == "exact_vmap":
                vel, div = divergence_exact_vmap(lambda z: model.velocity(space.project(z), tb, cond), xs, space)
            else:
                vel = model.velocity(space.project(xs), tb, cond)
                if divergence == "exact":
                    div = divergence_exact(vel, xs, space)
                else:
                    div = divergence_hutchinson(vel, xs, probe, space)
        return torch.cat([vel.detach().reshape(-1), div.detach()])

    y0 = torch.cat([x.detach().reshape(-1), torch.zeros(n, device=x.device, dtype=x.dtype)])
    sol = integrate_ode(f, y0, ts, method=method, rtol=rtol, atol=atol, progress=progress)
    return sol.x[:numel].reshape(x.shape), sol.x[numel:], sol.nfe


def _ode_times(lo: float, hi: float, method: str, steps: int, x: Tensor) -> Tensor:
    if method == "rk45":
        return torch.tensor([lo, hi], device=x.device, dtype=x.dtype)
    return torch.linspace(lo, hi, steps + 1, device=x.device, dtype=x.dtype)


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
    cond: Tensor | None = None,
) -> LikelihoodResult:
    """``log p_{t_min}(x)`` per sample under the model's probability-flow ODE.

    Args:
        model: the denoiser (its process and space are used).
        x: data ``[B, *]`` (Euclidean) or ``[N, D]`` (point clouds, already zero-CoM).
        divergence: ``exact``, ``exact_vmap`` (point clouds: the exact trace with the backward passes batched by
            ``torch.func.vmap``), ``hutchinson`` (Rademacher probe), or ``auto`` (exact when a sample has at most
            16 dimensions).
        method: ``rk45`` (adaptive) or ``euler`` / ``heun`` with ``steps`` uniform steps.
        t_min: lower integration limit (default: the process's ``t_min``).
        cond: the condition of a conditional model (``log p(x | cond)``), handed to it unchanged.
    """
    proc = model.process
    divergence = _resolve_divergence(divergence, x, model.space)
    lo = proc.t_min if t_min is None else t_min
    ts = _ode_times(lo, 1.0, method, steps, x)
    z, delta, nfe = _integrate_with_divergence(model, x, ts, divergence, method, rtol, atol, generator, progress,
                                               cond)
    prior = proc.prior_logp(z, model.space)
    return LikelihoodResult(logp=prior + delta, prior_logp=prior, delta_logp=delta, z=z, nfe=nfe,
                            dof=model.space.dof(x))


def sample_with_log_likelihood(
    model: Denoiser,
    z: Tensor,
    *,
    divergence: str = "exact",
    method: str = "heun",
    steps: int = 100,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_min: float | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    cond=None,
) -> LikelihoodResult:
    """Sample by the probability-flow ODE from a prior draw ``z`` (``t = 1``) to ``t_min`` and get the model's
    log-density of each sample in the same pass (FFJORD-style): ``log q(x) = log p_prior(z) - delta`` where
    ``delta`` integrates the divergence from 1 down to ``t_min``.  The result holds the samples in ``x`` and
    the latent in ``z``.

    This is what importance weights need: ``log w = -u(x) - log q(x)`` with the exact divergence
    (``divergence="exact"``; Hutchinson's ``log q`` is unbiased, ``exp`` of it is not).
    """
    proc = model.process
    divergence = _resolve_divergence(divergence, z, model.space)
    lo = proc.t_min if t_min is None else t_min
    ts = _ode_times(1.0, lo, method, steps, z)
    x, delta, nfe = _integrate_with_divergence(model, z, ts, divergence, method, rtol, atol, generator, progress,
                                               cond)
    prior = proc.prior_logp(z, model.space)
    return LikelihoodResult(logp=prior - delta, prior_logp=prior, delta_logp=-delta, z=z, nfe=nfe,
                            dof=model.space.dof(z), x=x)
