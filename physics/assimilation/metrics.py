"""Scores of state estimates and ensembles against a truth: RMSE, ensemble spread, CRPS.

All functions are pure torch and work on fields of any shape; an ensemble carries its members along
``member_dim`` (``0`` by default, e.g. ``[M, 64, 64, 64]``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "rmse",
    "ensemble_spread",
    "crps_ensemble",
    "crps_gaussian",
    "AssimilationScores",
    "score_ensemble",
    "WindowScores",
    "score_windows",
]


def rmse(estimate: Tensor, truth: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """Root-mean-square error ``sqrt(mean((estimate - truth)**2))`` over all elements, or over ``dim`` only.

    ``estimate`` and ``truth`` broadcast against each other.
    """
    sq = (estimate - truth) ** 2
    return (sq.mean() if dim is None else sq.mean(dim=dim)).sqrt()


def ensemble_spread(ens: Tensor, member_dim: int = 0) -> Tensor:
    """Ensemble spread ``sqrt(mean over variables of the unbiased ensemble variance)`` (a scalar).

    ``var_j = sum_i (x_ij - xbar_j)**2 / (M - 1)`` for every variable ``j`` (all dims but ``member_dim``), then
    ``sqrt(mean_j var_j)``: the standard data-assimilation spread that a well-calibrated ensemble matches to the
    RMSE of its mean (e.g. DAPPER's ``spread``).  Needs ``M >= 2``.
    """
    if ens.shape[member_dim] < 2:
        raise ValueError(f"the spread needs at least 2 members, got {ens.shape[member_dim]}")
    return ens.var(dim=member_dim, unbiased=True).mean().sqrt()


def crps_ensemble(
    ens: Tensor,
    truth: Tensor,
    member_dim: int = 0,
    fair: bool = True,
    reduction: Literal["mean", "none"] = "mean",
) -> Tensor:
    """Continuous ranked probability score of an ensemble, ``CRPS = E|X - y| - 1/2 E|X - X'|``, per variable.

    ``E|X - y|`` is the member average; ``E|X - X'|`` is the mean absolute difference over member pairs,
    ``sum_{i, j} |x_i - x_j| / (M (M - 1))`` if ``fair`` (the unbiased "fair" CRPS of Ferro 2014, whose
    expectation is the CRPS of the distribution the members are drawn from) or ``/ M**2`` if not (the CRPS of the
    empirical distribution).  The pair sum uses the sorted members, ``sum_{i, j} |x_i - x_j| = 2 sum_i (2 i - M - 1)
    x_(i)`` (``i = 1..M``): ``O(M log M)`` time and ``O(M)`` memory per variable.  With ``M = 1`` the pair term is 0
    and the CRPS is ``|x - y|``.

    Args:
        ens: ensemble with members along ``member_dim``, e.g. ``[M, ...]``.
        truth: verifying values, broadcastable to the ensemble without its member dimension.
        member_dim: the member dimension.
        fair: the ``M (M - 1)`` denominator (``True``) or ``M**2``.
        reduction: ``"mean"`` over variables (a scalar) or ``"none"`` (one score per variable).
    """
    member_dim = member_dim % ens.ndim
    m = ens.shape[member_dim]
    field_shape = ens.shape[:member_dim] + ens.shape[member_dim + 1:]
    truth = torch.broadcast_to(torch.as_tensor(truth, dtype=ens.dtype, device=ens.device), field_shape)
    skill = (ens - truth.unsqueeze(member_dim)).abs().mean(member_dim)
    if m == 1:
        crps = skill
    else:
        ranks = torch.arange(1, m + 1, dtype=ens.dtype, device=ens.device)
        shape = [1] * ens.ndim
        shape[member_dim] = m
        weights = (2 * ranks - m - 1).reshape(shape)
        pair_sum = 2 * (torch.sort(ens, dim=member_dim).values * weights).sum(member_dim)
        crps = skill - 0.5 * pair_sum / (m * (m - 1) if fair else m * m)
    if reduction == "mean":
        return crps.mean()
    if reduction == "none":
        return crps
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def crps_gaussian(mu: Tensor, sigma: Tensor, y: Tensor) -> Tensor:
    """Closed-form CRPS of ``N(mu, sigma**2)`` at ``y`` (elementwise, broadcast; Gneiting et al. 2005):
    ``sigma (z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi))`` with ``z = (y - mu) / sigma``."""
    mu, sigma, y = (torch.as_tensor(v) for v in (mu, sigma, y))
    if not torch.is_floating_point(sigma):
        sigma = sigma.to(torch.get_default_dtype())
    if (sigma <= 0).any():
        raise ValueError("sigma must be > 0")
    z = (y - mu) / sigma
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    pdf = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    return sigma * (z * (2 * cdf - 1) + 2 * pdf - 1 / math.sqrt(math.pi))


@dataclass(frozen=True)
class AssimilationScores:
    """Scores of one ensemble against the truth: RMSE of the ensemble mean, spread, fair CRPS (all floats)."""

    rmse: float
    spread: float
    crps: float

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """``{prefix + name: value}``, e.g. ``as_dict("analysis/")`` for logging."""
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


def score_ensemble(ens: Tensor, truth: Tensor, member_dim: int = 0) -> AssimilationScores:
    """RMSE of the ensemble mean, :func:`ensemble_spread` and fair :func:`crps_ensemble` of ``ens`` ``[M, ...]``
    against ``truth`` ``[...]``."""
    member_dim = member_dim % ens.ndim
    return AssimilationScores(
        rmse=float(rmse(ens.mean(member_dim), truth)),
        spread=float(ensemble_spread(ens, member_dim)),
        crps=float(crps_ensemble(ens, truth, member_dim, fair=True)),
    )


@dataclass(frozen=True)
class WindowScores:
    """Per-window scores of ``B`` assimilated windows (each a ``[B]`` tensor), so that methods can be compared
    with error bars over windows.

    Attributes:
        rmse: RMSE of the ensemble mean over every state and variable of the window.
        rmse_after_spinup: the same over the states from ``spinup`` on.
        rmse_observed: the same over the observed states from ``spinup`` on.
        spread: ensemble spread (:func:`ensemble_spread` convention) over the states from ``spinup`` on.
        crps: fair CRPS averaged over the states from ``spinup`` on and the variables.
    """

    rmse: Tensor
    rmse_after_spinup: Tensor
    rmse_observed: Tensor
    spread: Tensor
    crps: Tensor

    def summary(self) -> dict[str, tuple[float, float]]:
        """``{name: (mean over windows, standard error of that mean)}``, plus ``spread_error_ratio`` (mean spread
        over mean RMSE after spin-up, its error by the delta method)."""
        out = {}
        for k, v in asdict(self).items():
            v = v.double()
            out[k] = (float(v.mean()), float(v.std(unbiased=True) / math.sqrt(len(v))) if len(v) > 1 else float("nan"))
        ratio = self.spread.double() / self.rmse_after_spinup.double()
        out["spread_error_ratio"] = (float(self.spread.double().mean() / self.rmse_after_spinup.double().mean()),
                                     float(ratio.std(unbiased=True) / math.sqrt(len(ratio))) if len(ratio) > 1
                                     else float("nan"))
        return out


def score_windows(ens: Tensor, truth: Tensor, observed: Tensor, spinup: int = 0) -> WindowScores:
    """Scores of ensembles ``[B, M, T, *S]`` (``M >= 2`` members) against truths ``[B, T, *S]``; ``observed`` is a
    ``[T]`` bool mask of the states with observations, ``spinup`` the number of leading states left out of the
    after-spin-up scores."""
    if ens.ndim < 4 or ens.shape[0] != truth.shape[0] or ens.shape[2:] != truth.shape[1:]:
        raise ValueError(f"need ens [B, M, T, ...] and truth [B, T, ...]; got {tuple(ens.shape)}, {tuple(truth.shape)}")
    T = truth.shape[1]
    observed = torch.as_tensor(observed, dtype=torch.bool)
    if observed.shape != (T,) or not 0 <= spinup < T:
        raise ValueError(f"observed must be a [T = {T}] mask and 0 <= spinup < T, got {tuple(observed.shape)}, {spinup}")
    ens, truth = ens.double(), truth.double()
    sq = (ens.mean(1) - truth).square().flatten(2).mean(-1)  # [B, T]: per-state mean squared error
    late = torch.arange(T) >= spinup
    obs_late = observed & late
    var = ens.var(1, unbiased=True).flatten(2).mean(-1)  # [B, T]
    crps = crps_ensemble(ens.transpose(0, 1), truth, member_dim=0, fair=True, reduction="none").flatten(2).mean(-1)
    return WindowScores(
        rmse=sq.mean(-1).sqrt(),
        rmse_after_spinup=sq[:, late].mean(-1).sqrt(),
        rmse_observed=sq[:, obs_late].mean(-1).sqrt() if obs_late.any() else torch.full((len(sq),), float("nan")),
        spread=var[:, late].mean(-1).sqrt(),
        crps=crps[:, late].mean(-1),
    )
