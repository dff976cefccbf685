"""A bootstrap particle filter (sequential importance resampling) with systematic resampling and a
regularisation jitter -- the classical method that needs no Gaussian assumption, practical for small state
dimensions such as Lorenz-63 (Gordon, Salmond & Smith 1993; van Leeuwen et al. 2019).

Conventions as in :mod:`physics.assimilation.enkf` (ensembles ``[..., M, D]``, ``y = H x + e`` or
``y = obs_fn(H x) + e``, Gaussian noise).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from moldiff.progress import progress_bar

from .enkf import Advance, FilterResult, ObsFn, Observations, observation_std, member_spread, checked_schedule, observe_members

__all__ = ["systematic_resample", "run_particle_filter"]


def systematic_resample(log_w: Tensor, generator: torch.Generator) -> Tensor:
    """Indices ``[..., M]`` of a systematic resampling of the particles with log-weights ``log_w [..., M]``
    (one uniform per batch element; each particle kept ``floor(M w_i)`` or ``ceil(M w_i)`` times)."""
    m = log_w.shape[-1]
    w = torch.softmax(log_w, -1)
    cdf = w.cumsum(-1)
    cdf[..., -1] = 1.0  # guard against rounding
    u = (torch.rand(*log_w.shape[:-1], 1, generator=generator, dtype=log_w.dtype, device=log_w.device)
         + torch.arange(m, dtype=log_w.dtype, device=log_w.device)) / m
    return torch.searchsorted(cdf.contiguous(), u.contiguous()).clamp(max=m - 1)


def run_particle_filter(
    advance: Advance,
    ens0: Tensor,
    observations: Observations,
    H: Tensor,
    obs_std: float | Tensor,
    *,
    interval: float,
    num_states: int,
    generator: torch.Generator,
    resample_threshold: float = 0.5,
    jitter: float = 0.0,
    keep_ensemble: bool = False,
    progress: bool = False,
    obs_fn: ObsFn = None,
) -> FilterResult:
    """Bootstrap particle filter over states ``0, interval, ..., (T - 1) interval``.

    Particles are advanced with the model; at an observation their log-weights gain ``-|R^-1/2 (y - H x)|^2 / 2``;
    when the effective sample size ``1 / sum w^2`` falls below ``resample_threshold * M`` they are resampled
    (systematic) and, with ``jitter > 0``, perturbed by ``N(0, (jitter * s)^2)`` with ``s`` the per-variable
    ensemble std before resampling (regularisation against sample impoverishment).  The reported ensemble at each
    state is the particles resampled by their current weights (so means, spreads and CRPS are of equally weighted
    members).  The weighted mean is the estimate: ``mean`` holds it.

    Args:
        generator: randomness of the resampling and the jitter.
        resample_threshold: ESS fraction below which to resample (1: every observation).
        jitter: regularisation noise in units of the ensemble std (0: none).
        obs_fn: nonlinear observations ``y = obs_fn(H x) + e`` (elementwise; ``None``: linear).
    """
    if not 0 <= resample_threshold <= 1 or jitter < 0:
        raise ValueError(f"need 0 <= resample_threshold <= 1 and jitter >= 0, got {resample_threshold}, {jitter}")
    m, d = ens0.shape[-2], ens0.shape[-1]
    obs = checked_schedule(ens0, observations, H, num_states)
    H = torch.as_tensor(H, dtype=ens0.dtype, device=ens0.device)
    std = observation_std(obs_std, H.shape[0], ens0)
    log_w = torch.full(ens0.shape[:-1], -math.log(m), dtype=ens0.dtype, device=ens0.device)
    ens = ens0
    means, spreads, f_means, f_spreads, kept = [], [], [], [], []
    for k in progress_bar(range(num_states), enabled=progress, desc="particle filter", leave=False):
        if k > 0:
            ens = advance(ens, interval)
        f_means.append((torch.softmax(log_w, -1).unsqueeze(-1) * ens).sum(-2))
        f_spreads.append(member_spread(ens))
        if k in obs:
            y = torch.as_tensor(obs[k], dtype=ens.dtype, device=ens.device)
            log_w = log_w - 0.5 * (((y.unsqueeze(-2) - observe_members(ens, H, obs_fn)) / std) ** 2).sum(-1)
            log_w = log_w - torch.logsumexp(log_w, -1, keepdim=True)
            ess = 1.0 / torch.exp(2 * log_w).sum(-1)  # [...]
            if bool((ess < resample_threshold * m).any()):
                s = ens.std(-2, keepdim=True)
                idx = systematic_resample(log_w, generator)
                ens = torch.gather(ens, -2, idx.unsqueeze(-1).expand(*idx.shape, d))
                if jitter > 0:
                    ens = ens + jitter * s * torch.randn(ens.shape, generator=generator, dtype=ens.dtype,
                                                         device=ens.device)
                log_w = torch.full_like(log_w, -math.log(m))
        w = torch.softmax(log_w, -1)
        means.append((w.unsqueeze(-1) * ens).sum(-2))
        equal = torch.gather(ens, -2, systematic_resample(log_w, generator).unsqueeze(-1).expand(*ens.shape))
        spreads.append(member_spread(equal))
        if keep_ensemble:
            kept.append(equal)
    observed = torch.zeros(num_states, dtype=torch.bool)
    observed[list(obs)] = True
    return FilterResult(mean=torch.stack(means, -2), spread=torch.stack(spreads, -1),
                        forecast_mean=torch.stack(f_means, -2), forecast_spread=torch.stack(f_spreads, -1),
                        observed=observed, ensemble=torch.stack(kept, -3) if keep_ensemble else None)
