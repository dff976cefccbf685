"""Smoothers: the exact Kalman (Rauch-Tung-Striebel) smoother, the ensemble Kalman smoother (EnKS) and the
iterative ensemble Kalman smoother (iEnKS).

A smoother estimates every state of a window from *all* its observations (past and future), the job SDA does
with a learned prior; a filter (:mod:`physics.assimilation.enkf`) uses the past only.  Conventions as in
:mod:`physics.assimilation.enkf`: ensembles ``[..., M, D]`` with any leading batch shape (independent windows,
or a grid of tuning values, run as one tensor), linear observations ``y = H x + e``, ``e ~ N(0, diag(obs_std^2))``,
multiplicative inflation of the anomalies before each analysis.

* :func:`rts_smoother` -- exact for ``x_{k+1} = F x_k + w_k`` (the reference the ensemble smoothers are tested
  against).
* :func:`run_enks` -- the ensemble transform Kalman smoother: an ETKF whose ensemble-space transform of each
  analysis is applied to the ensembles of every earlier state of the window (Evensen & van Leeuwen 2000; Evensen
  2009, ch. 9; the square-root form of DAPPER's ``EnKS``), optionally only within a lag.
* :func:`run_ienks` -- Bocquet & Sakov's (2014) iterative ensemble Kalman smoother, lag ``L`` cycles, shift 1,
  single data assimilation, transform variant: at each cycle a Gauss-Newton minimisation in ensemble space over
  the initial conditions ``L`` cycles back, through the nonlinear model.

All are deterministic (no random numbers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from moldiff.progress import progress_bar

from .enkf import (Advance, ObsFn, Observations, observation_std, member_spread, checked_schedule, etkf_inputs, etkf_weights,
                   inflate, inflation_factor, kalman_filter, observe_members, obs_localization, letkf_transforms,
                   apply_transforms)

__all__ = ["SmootherResult", "etkf_transform", "rts_smoother", "run_enks", "run_ienks"]


@dataclass
class SmootherResult:
    """Estimates of ``T`` states (leading batch shape ``...`` as the initial ensemble).

    Attributes:
        mean: ``[..., T, D]`` smoothed means (each state's estimate from the observations the smoother used for it).
        spread: ``[..., T]`` ensemble spread ``sqrt(mean_j var_j)`` of the same ensembles.
        analysis_mean: ``[..., K, D]`` the filter-time analysis means at the ``K`` observed states (each from the
            observations up to that state: what DAPPER scores as the analysis RMSE).
        observed: ``[T]`` bool, whether the state had an observation.
        ensemble: ``[..., T, M, D]`` smoothed ensembles if requested, else ``None``.
        iterations: iEnKS: mean Gauss-Newton iterations per cycle (0 for the others).
    """

    mean: Tensor
    spread: Tensor
    analysis_mean: Tensor
    observed: Tensor
    ensemble: Tensor | None = None
    iterations: float = 0.0


# --------------------------------------------------------------------------------------------------------------
# exact reference


def rts_smoother(
    mean0: Tensor,
    cov0: Tensor,
    F: Tensor,
    observations: Observations,
    H: Tensor,
    obs_std: float | Tensor,
    *,
    num_states: int,
    process_cov: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Rauch-Tung-Striebel smoother of ``x_{k+1} = F x_k + w_k``: smoothed means ``[T, D]`` and covariances
    ``[T, D, D]`` given every observation (arguments as :func:`~physics.assimilation.enkf.kalman_filter`)."""
    means, covs = kalman_filter(mean0, cov0, F, observations, H, obs_std, num_states=num_states,
                                process_cov=process_cov)
    Q = process_cov if process_cov is not None else torch.zeros_like(cov0)
    ms, cs = [means[-1]], [covs[-1]]
    for k in range(num_states - 2, -1, -1):
        m_f, c_f = F @ means[k], F @ covs[k] @ F.T + Q  # forecast of state k + 1 from the filter at k
        gain = torch.linalg.solve(c_f, F @ covs[k]).T  # C_k = P_k F^T (P_{k+1}^f)^-1 (P symmetric)
        ms.append(means[k] + gain @ (ms[-1] - m_f))
        c = covs[k] + gain @ (cs[-1] - c_f) @ gain.T
        cs.append(0.5 * (c + c.T))
    return torch.stack(ms[::-1]), torch.stack(cs[::-1])


# --------------------------------------------------------------------------------------------------------------
# EnKS


def etkf_transform(ens: Tensor, y: Tensor, H: Tensor, obs_std: float | Tensor, obs_fn: ObsFn = None) -> Tensor:
    """The ETKF analysis as a left transform of the ensemble: ``G [..., M, M]`` with ``E_a = G @ E``.

    With ``X = Pi E`` the anomalies (``Pi = I - 1 1^T / M``), ``w`` and ``W = sqrt(M - 1) A^-1/2`` as in
    :func:`~physics.assimilation.enkf.etkf_analysis`: ``G = 1 1^T / M + (1 w^T + W) Pi``.  Applying the same
    ``G`` to the ensemble of an earlier state is the ensemble smoother's update of that state.
    """
    _, _, Y, innov = etkf_inputs(ens, y, H, obs_std, obs_fn)
    m = ens.shape[-2]
    w, W = etkf_weights(Y, innov)
    pi = torch.eye(m, dtype=ens.dtype, device=ens.device) - 1.0 / m
    ones = torch.ones(m, 1, dtype=ens.dtype, device=ens.device)
    return 1.0 / m + (ones @ w.transpose(-1, -2) + W) @ pi


def run_enks(
    advance: Advance,
    ens0: Tensor,
    observations: Observations,
    H: Tensor,
    obs_std: float | Tensor,
    *,
    interval: float,
    num_states: int,
    inflation: float | Tensor = 1.0,
    lag: int | None = None,
    localization: Tensor | None = None,
    keep_ensemble: bool = False,
    progress: bool = False,
    obs_fn: ObsFn = None,
) -> SmootherResult:
    """Ensemble transform Kalman smoother over states ``0, interval, ..., (T - 1) interval``.

    The filter part is the deterministic ETKF of :func:`~physics.assimilation.enkf.run_filter` (inflation of the
    forecast anomalies before each analysis); each analysis transform ``G`` (:func:`etkf_transform`) is also
    applied to the stored ensembles of the earlier states within ``lag`` states (``None``: the whole window).
    With ``localization`` (a state taper ``[D, D]``, e.g. :func:`~physics.assimilation.enkf.grid_localization`)
    the filter is the LETKF and every variable has its own transform
    (:func:`~physics.assimilation.enkf.letkf_transforms`), applied to that variable of the earlier states: the
    localised smoother (LETKS).

    Args:
        advance, ens0, observations, H, obs_std, interval, num_states, inflation, localization, obs_fn: as in
            ``run_filter``.
        lag: smooth only states at most ``lag`` states before the analysis time (``None``: all).
        keep_ensemble: also return the smoothed ensembles ``[..., T, M, D]``.
    """
    if lag is not None and lag < 0:
        raise ValueError(f"lag must be >= 0 or None, got {lag}")
    obs = checked_schedule(ens0, observations, H, num_states)
    infl = inflation_factor(inflation, ens0)
    rho = None if localization is None else obs_localization(localization, H)
    states: list[Tensor] = []
    analysis_means = []
    ens = ens0
    for k in progress_bar(range(num_states), enabled=progress, desc="enks cycles", leave=False):
        if k > 0:
            ens = advance(ens, interval)
        if k in obs:
            ens = inflate(ens, infl)
            if rho is None:
                G = etkf_transform(ens, obs[k], H, obs_std, obs_fn)
                update = lambda e, G=G: G @ e  # noqa: E731
            else:
                G = letkf_transforms(ens, obs[k], H, obs_std, rho, obs_fn)
                update = lambda e, G=G: apply_transforms(G, e)  # noqa: E731
            ens = update(ens)
            first = 0 if lag is None else max(0, k - lag)
            for j in range(first, k):
                states[j] = update(states[j])
            analysis_means.append(ens.mean(-2))
        states.append(ens)
    return _result(states, analysis_means, obs, num_states, keep_ensemble)


def _result(states, analysis_means, obs, num_states, keep_ensemble, iterations: float = 0.0) -> SmootherResult:
    ens = torch.stack(states, -3)  # [..., T, M, D]
    observed = torch.zeros(num_states, dtype=torch.bool)
    observed[list(obs)] = True
    analysis = torch.stack(analysis_means, -2) if analysis_means else ens.mean(-2)[..., :0, :]
    return SmootherResult(mean=ens.mean(-2), spread=member_spread(ens), analysis_mean=analysis, observed=observed,
                          ensemble=ens if keep_ensemble else None, iterations=iterations)


# --------------------------------------------------------------------------------------------------------------
# iEnKS


def run_ienks(
    advance: Advance,
    ens0: Tensor,
    observations: Observations,
    H: Tensor,
    obs_std: float | Tensor,
    *,
    interval: float,
    num_states: int,
    lag: int = 1,
    inflation: float | Tensor = 1.0,
    max_iterations: int = 10,
    tolerance: float = 1e-3,
    max_halvings: int = 8,
    keep_ensemble: bool = False,
    progress: bool = False,
    obs_fn: ObsFn = None,
) -> SmootherResult:
    """Iterative ensemble Kalman smoother (Bocquet & Sakov 2014): lag ``L`` observation cycles, shift 1, single
    data assimilation, transform variant.

    Cycle ``c`` assimilates the observation at state ``tau_c`` with the prior ensemble ``E`` at the window start
    ``s = tau_{c - L}`` (state 0 while ``c < L``): it minimises, over ``x = xbar + A w`` (``A`` the normalised
    anomalies of ``E``),

        ``J(w) = |w|^2 / 2 + |R^-1/2 (y_c - H M_{s -> tau_c}(x))|^2 / 2``

    by Gauss-Newton steps ``w -= (I + Y^T Y)^-1 grad J`` with the sensitivities ``Y`` of the propagated ensemble
    ``xbar + A w + sqrt(M - 1) T A`` divided by the transform ``T`` (the transform variant), until
    ``|dw| < tolerance`` or ``max_iterations``; the analysis at ``s`` is ``xbar + A w + sqrt(M - 1) T A`` with
    ``T = (I + Y^T Y)^-1/2``.  Propagated through the window it is the smoothed estimate of states ``s..tau_c``
    (later cycles overwrite the estimates of the states they cover, so each state ends with the estimate of the
    last window that contained it, i.e. lag ``L`` cycles of future observations); the window start then moves to
    ``tau_{c + 1 - L}`` and its anomalies are inflated.  States after the last observation are forecasts.  In a
    linear model one iteration is exact: with ``L`` at least the number of cycles the result is the Kalman
    smoother (:func:`rts_smoother` without process noise).

    Args:
        advance, ens0, observations, H, obs_std, interval, num_states, inflation, obs_fn: as in ``run_filter``
            (with ``obs_fn`` the Gauss-Newton steps linearise ``g(H M(x))`` through the ensemble).
        lag: ``L >= 0`` observation cycles (0: an iterative ETKF).
        max_iterations, tolerance: Gauss-Newton stopping rule (``|dw|`` in ensemble space, largest over the batch).
        max_halvings: a step whose members leave the model's domain (the integration blows up, a
            ``FloatingPointError``) is halved and retried from the last good point, at most this many times per
            cycle (backtracking, which keeps long or strongly nonlinear windows from diverging).
    """
    if lag < 0 or max_iterations < 1:
        raise ValueError(f"need lag >= 0 and max_iterations >= 1, got {lag}, {max_iterations}")
    m = ens0.shape[-2]
    obs = checked_schedule(ens0, observations, H, num_states)
    times = sorted(obs)
    infl = inflation_factor(inflation, ens0)
    H = torch.as_tensor(H, dtype=ens0.dtype, device=ens0.device)
    std = observation_std(obs_std, H.shape[0], ens0)
    eye = torch.eye(m, dtype=ens0.dtype, device=ens0.device)
    smoothed: list[Tensor | None] = [None] * num_states
    analysis_means: list[Tensor] = []
    start, prior = 0, ens0
    total_iterations = 0
    for c, tau in enumerate(progress_bar(times, enabled=progress, desc="ienks cycles", leave=False)):
        y = torch.as_tensor(obs[tau], dtype=ens0.dtype, device=ens0.device)
        xbar = prior.mean(-2, keepdim=True)  # [..., 1, D]
        A = (prior - xbar) / math.sqrt(m - 1)  # [..., M, D]
        w = torch.zeros(prior.shape[:-1], dtype=prior.dtype, device=prior.device)  # [..., M]
        T = eye.expand(*prior.shape[:-2], m, m)
        w_ok, ens_ok, dw, halvings = None, None, None, 0  # the last point that propagated, for the backtracking
        for _ in range(max_iterations):
            ens = xbar + (w.unsqueeze(-2) @ A) + math.sqrt(m - 1) * (T @ A)
            try:
                end = _propagate(advance, ens, tau - start, interval)
                hy = observe_members(end, H, obs_fn)  # [..., M, P]
            except FloatingPointError:
                if w_ok is None or halvings >= max_halvings:
                    raise
                dw, halvings = dw / 2, halvings + 1  # the Gauss-Newton step overshot: halve it
                w = w_ok - dw
                total_iterations += 1
                continue
            hbar = hy.mean(-2)
            Y = torch.linalg.solve(T, (hy - hbar.unsqueeze(-2)) / math.sqrt(m - 1)) / std  # [..., M, P]
            grad = w - (Y @ ((y - hbar) / std).unsqueeze(-1)).squeeze(-1)
            evals, Q = torch.linalg.eigh(eye + Y @ Y.transpose(-1, -2))
            dw = (Q @ ((Q.transpose(-1, -2) @ grad.unsqueeze(-1)) / evals.unsqueeze(-1))).squeeze(-1)
            w_ok, ens_ok = w, ens
            w = w - dw
            T = (Q * evals.rsqrt().unsqueeze(-2)) @ Q.transpose(-1, -2)
            total_iterations += 1
            if float(dw.norm(dim=-1).max()) < tolerance:
                break
        analysis = xbar + (w.unsqueeze(-2) @ A) + math.sqrt(m - 1) * (T @ A)
        try:
            _propagate(advance, analysis, tau - start, interval)
        except FloatingPointError:  # the last step was never evaluated and overshot: keep the last ensemble that
            if ens_ok is None:  # propagated
                raise
            analysis = ens_ok
        ens = analysis
        for k in range(start, tau + 1):  # the window's smoothed trajectory
            if k > start:
                ens = advance(ens, interval)
            smoothed[k] = ens
        analysis_means.append(ens.mean(-2))
        if c + 1 < len(times):
            nxt = times[c + 1 - lag] if c + 1 - lag >= 0 else start
            moved = analysis
            for k in range(start + 1, nxt + 1):
                moved = advance(moved, interval)
                if k > tau and k < nxt:  # lag 0 only: states between two windows are forecasts
                    smoothed[k] = moved
            prior = analysis if nxt == start else inflate(moved, infl)
            start = nxt
    if not times:
        smoothed[0] = ens0
    for k in range(times[-1] + 1 if times else 1, num_states):  # forecasts after the last observation
        smoothed[k] = advance(smoothed[k - 1], interval)
    return _result(smoothed, analysis_means, obs, num_states, keep_ensemble,
                   iterations=total_iterations / max(1, len(times)))


def _propagate(advance: Advance, ens: Tensor, num_intervals: int, interval: float) -> Tensor:
    for _ in range(num_intervals):
        ens = advance(ens, interval)
    return ens
