"""Metropolis-adjusted Langevin (MALA) for reference data, and the integrated autocorrelation time.

:func:`mala` runs ``C`` independent chains at once (one vectorised energy + gradient evaluation per step).
A chain's state is ``x [n, d]``; with ``zero_com=True`` the chain lives in the zero-centre-of-mass subspace
(translation-invariant targets such as DW4 and LJ clusters): the start is centred, and both the Gaussian
noise and the gradient are projected onto the subspace, so the proposal is a Gaussian *in the subspace* and
its density -- which enters the Metropolis-Hastings ratio -- is the one computed from the projected vectors.
With ``zero_com=False`` the state is plain Euclidean (``x [C, 1, D]`` is a D-dimensional chain).

Step sizes are adapted per chain during burn-in only (Robbins-Monro on the log step size towards
``target_accept``) and then frozen, so the kept samples come from a time-homogeneous, exact MCMC kernel.
Randomness comes only from the ``generator`` argument.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from moldiff.diffusion.spaces import remove_com_dense
from moldiff.progress import progress_bar

__all__ = ["MCMCResult", "mala", "energy_and_grad", "integrated_autocorr_time", "autocorrelation"]

EnergyFn = Callable[[Tensor], Tensor]


@dataclass
class MCMCResult:
    """Output of :func:`mala` (``C`` chains, ``K`` kept samples per chain, ``T = burn_in + n_steps`` steps).

    Attributes:
        samples: ``[C, K, n, d]`` states after post-burn-in steps ``thin, 2 thin, ..., K thin``.
        energies: ``[C, K]`` reduced energies of ``samples``.
        acceptance: ``[C]`` fraction of accepted proposals after burn-in (NaN if ``n_steps == 0``).
        step_size: ``[C]`` final (frozen) step sizes.
        energy_trace: ``[C_trace, T]`` reduced energy after every step of the first ``C_trace`` chains
            (burn-in included; CPU float32).
        mean_energy_trace: ``[T]`` reduced energy after every step averaged over all chains (CPU float64).
        burn_in, thin: as passed.
        final_state: ``[C, n, d]`` the last state of every chain (to continue sampling).
        wall_time: seconds.
    """

    samples: Tensor
    energies: Tensor
    acceptance: Tensor
    step_size: Tensor
    energy_trace: Tensor
    mean_energy_trace: Tensor
    burn_in: int
    thin: int
    final_state: Tensor
    wall_time: float


def energy_and_grad(energy_fn: EnergyFn, x: Tensor) -> tuple[Tensor, Tensor]:
    """``energy_fn(x) [C]`` and its gradient ``[*x.shape]`` (detached; works inside ``torch.no_grad``)."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        e = energy_fn(xg)
        (g,) = torch.autograd.grad(e.sum(), xg)
    return e.detach(), g


def _project(v: Tensor, zero_com: bool) -> Tensor:
    """Remove the mean over the particle axis (dim -2) if ``zero_com``."""
    return remove_com_dense(v) if zero_com else v


def _sqnorm(v: Tensor) -> Tensor:
    return v.pow(2).flatten(1).sum(1)


def mala(
    energy_fn: EnergyFn,
    x0: Tensor,
    *,
    n_steps: int,
    step_size: float | Tensor,
    generator: torch.Generator,
    burn_in: int = 0,
    thin: int = 1,
    target_accept: float = 0.574,
    adapt_rate: float = 0.5,
    zero_com: bool = True,
    trace_chains: int | None = None,
    progress: bool = True,
    desc: str = "MALA",
    energy_and_grad_fn: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None,
) -> MCMCResult:
    """Run ``C`` independent MALA chains on ``p(x) ~ exp(-energy_fn(x))``.

    Proposal ``y = x - h grad U(x) + sqrt(2 h) xi`` (``xi`` standard normal, projected to zero CoM if
    ``zero_com``), accepted with probability ``min(1, p(y) q(x|y) / (p(x) q(y|x)))``; proposals with a
    non-finite energy are rejected.  During the first ``burn_in`` steps each chain's ``log h`` moves by
    ``adapt_rate * (t + 1)^-0.6 * (alpha - target_accept)`` (``alpha`` its acceptance probability); after
    that ``h`` is frozen and ``n_steps`` sampling steps follow, of which every ``thin``-th state is kept.

    Args:
        energy_fn: reduced energy ``[C, n, d] -> [C]`` (differentiable).
        x0: ``[C, n, d]`` initial states (centred if ``zero_com``).
        n_steps: sampling steps after burn-in; ``K = n_steps // thin`` samples are kept per chain.
        step_size: initial ``h``, a float or ``[C]``.
        generator: the only source of randomness (on ``x0``'s device).
        burn_in: adaptation steps, discarded.
        thin: keep every ``thin``-th post-burn-in state.
        target_accept: acceptance probability aimed at during burn-in (0.574 is optimal for MALA).
        zero_com: chains live in the zero-centre-of-mass subspace (mean over dim -2 removed).
        trace_chains: record the per-step energy of only the first ``trace_chains`` chains (None: all).
        progress: show a tqdm bar.
        energy_and_grad_fn: optional ``x -> (U [C], grad U [C, n, d])`` used instead of autograd through
            ``energy_fn`` (e.g. ``system.reduced_energy_and_grad``, a closed form).
    """
    if x0.dim() != 3:
        raise ValueError(f"x0 must be [C, n, d], got {list(x0.shape)}")
    if n_steps < 0 or burn_in < 0 or thin < 1:
        raise ValueError("need n_steps >= 0, burn_in >= 0, thin >= 1")
    C = x0.shape[0]
    dev, dt = x0.device, x0.dtype
    x = _project(x0.detach().clone(), zero_com)
    log_h = torch.as_tensor(step_size, dtype=torch.float64, device=dev).log().expand(C).clone()
    if not torch.isfinite(log_h).all():
        raise ValueError("step_size must be positive")
    K = n_steps // thin
    n_trace = C if trace_chains is None else min(int(trace_chains), C)
    T = burn_in + n_steps
    samples = torch.empty((C, K, *x.shape[1:]), dtype=dt, device=dev)
    energies = torch.empty((C, K), dtype=torch.float64, device=dev)
    trace = torch.empty((n_trace, T), dtype=torch.float32)
    mean_trace = torch.empty(T, dtype=torch.float64)
    trace_dev = torch.empty((n_trace, T), dtype=torch.float32, device=dev)
    mean_trace_dev = torch.empty(T, dtype=torch.float64, device=dev)
    accepted = torch.zeros(C, dtype=torch.float64, device=dev)

    if energy_and_grad_fn is None:
        def energy_and_grad_fn(z: Tensor) -> tuple[Tensor, Tensor]:
            return energy_and_grad(energy_fn, z)

    t0 = time.perf_counter()
    e, g = energy_and_grad_fn(x)
    g = _project(g, zero_com)
    if not torch.isfinite(e).all():
        raise ValueError("energy_fn is not finite at some initial states")
    bar = progress_bar(range(T), enabled=progress, desc=desc, leave=False, mininterval=1.0)
    k = 0
    for t in bar:
        h = log_h.exp().to(dt)
        hx = h.view(C, *([1] * (x.dim() - 1)))
        xi = _project(torch.randn(x.shape, generator=generator, dtype=dt, device=dev), zero_com)
        y = x - hx * g + (2 * hx).sqrt() * xi
        e_y, g_y = energy_and_grad_fn(y)
        g_y = _project(g_y, zero_com)
        # log q(x | y) - log q(y | x); q(b | a) ~ exp(-|b - a + h grad(a)|^2 / 4h)
        log_q_ratio = (_sqnorm(y - x + hx * g) - _sqnorm(x - y + hx * g_y)) / (4 * h)
        log_alpha = (e - e_y).to(torch.float64) + log_q_ratio.to(torch.float64)
        ok = torch.isfinite(e_y) & torch.isfinite(log_alpha) & torch.isfinite(g_y).flatten(1).all(1)
        log_alpha = torch.where(ok, log_alpha, torch.full_like(log_alpha, -math.inf))
        u = torch.rand(C, generator=generator, dtype=torch.float64, device=dev)
        acc = u.log() < log_alpha
        accm = acc.view(C, *([1] * (x.dim() - 1)))
        x = torch.where(accm, y, x)
        g = torch.where(accm, g_y, g)
        e = torch.where(acc, e_y, e)
        if t < burn_in:
            alpha = log_alpha.clamp(max=0.0).exp()
            log_h = log_h + adapt_rate * (t + 1) ** -0.6 * (alpha - target_accept)
        else:
            accepted += acc.to(torch.float64)
            if (t - burn_in + 1) % thin == 0 and k < K:
                samples[:, k] = x
                energies[:, k] = e.to(torch.float64)
                k += 1
        trace_dev[:, t] = e[:n_trace].to(torch.float32)
        mean_trace_dev[t] = e.to(torch.float64).mean()
        if progress and t % 200 == 0:
            bar.set_postfix(E=f"{float(mean_trace_dev[t]):.3f}",
                            acc=f"{float(accepted.mean()) / max(t - burn_in + 1, 1):.2f}" if t >= burn_in else "-")
    bar.close()
    trace.copy_(trace_dev)
    mean_trace.copy_(mean_trace_dev)
    acceptance = accepted / n_steps if n_steps > 0 else torch.full((C,), math.nan, dtype=torch.float64, device=dev)
    return MCMCResult(samples=samples, energies=energies, acceptance=acceptance, step_size=log_h.exp(),
                      energy_trace=trace, mean_energy_trace=mean_trace, burn_in=burn_in, thin=thin,
                      final_state=x, wall_time=time.perf_counter() - t0)


def autocorrelation(series: np.ndarray | Tensor) -> np.ndarray:
    """Normalised autocorrelation function ``rho(0..T-1)`` of a series ``[T]``, or the chain-averaged one of
    ``[M, T]`` (each chain centred on its own mean; autocovariances averaged over chains, then normalised)."""
    x = np.asarray(series.detach().cpu() if isinstance(series, Tensor) else series, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"series must be [T] or [M, T] with T >= 2, got {x.shape}")
    T = x.shape[1]
    x = x - x.mean(axis=1, keepdims=True)
    n = 1 << (2 * T - 1).bit_length()
    f = np.fft.rfft(x, n=n, axis=1)
    acov = np.fft.irfft(f * np.conj(f), n=n, axis=1)[:, :T].mean(axis=0) / T
    if acov[0] <= 0:
        return np.full(T, np.nan)  # constant series (e.g. a chain that never moves): undefined
    return acov / acov[0]


def integrated_autocorr_time(series: np.ndarray | Tensor, c: float = 5.0) -> float:
    """Integrated autocorrelation time ``tau = 1 + 2 sum_{t>=1} rho(t)`` of a series ``[T]`` (or ``[M, T]``
    independent chains, averaging their autocorrelation functions), with Sokal's automatic window: the sum
    stops at the smallest ``W`` with ``W >= c tau(W)``.  In units of the series' spacing; reliable when
    ``T >~ 50 tau``.  A constant series (a stuck chain) gives NaN."""
    rho = autocorrelation(series)
    if np.isnan(rho[0]):
        return math.nan
    taus = 2.0 * np.cumsum(rho) - 1.0
    window = np.arange(len(taus)) < c * taus
    m = int(np.argmin(window)) if not window.all() else len(taus) - 1
    return float(max(taus[m], 1e-12))
