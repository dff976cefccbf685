"""Ensemble Kalman filters (stochastic EnKF, ETKF / LETKF), an exact Kalman filter, and localisation tapers.

Conventions used throughout:

* An ensemble is a tensor ``[..., M, D]``: ``M`` members (rows) of a ``D``-dimensional state, with any leading
  batch shape ``...`` (independent filters, e.g. a grid of inflation factors, run as one tensor).
* Observations are ``y = H x + e`` with a dense operator ``H`` ``[P, D]`` and independent Gaussian noise
  ``e ~ N(0, R)``, ``R = diag(obs_std**2)``; ``obs_std`` is a scalar or a ``[P]`` tensor.  The ensemble-space
  methods (ETKF / LETKF, and the smoothers and particle filter built on them) also take nonlinear observations
  ``y = g(H x) + e``: an elementwise ``obs_fn = g`` applied to every member's ``H x`` (the ensemble's observation
  anomalies replace ``H X``, as in DAPPER and Hunt et al. 2007, sec. 2.3); ``H`` still says where each observation
  is, for localisation.
* Randomness (the perturbed observations of the stochastic EnKF, the ETKF's optional random rotations) comes only
  from an explicit :class:`torch.Generator`; the plain ETKF is deterministic.
* Multiplicative ``inflation`` multiplies the forecast *anomalies* (so the forecast covariance by
  ``inflation**2``), the convention of Anderson & Anderson (1999) and DAPPER.

References: Burgers, van Leeuwen & Evensen (1998); Evensen (2009), *Data Assimilation*; Bishop, Etherton & Majumdar
(2001); Hunt, Kostelich & Szunyogh (2007); Gaspari & Cohn (1999).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Mapping, Sequence, Union

import torch
from torch import Tensor
from moldiff.progress import progress_bar

__all__ = [
    "ObsFn",
    "observe_members",
    "enkf_analysis",
    "etkf_analysis",
    "random_mean_preserving_rotation",
    "kalman_analysis",
    "kalman_filter",
    "gaspari_cohn",
    "ring_localization",
    "grid_localization",
    "letkf_transforms",
    "apply_transforms",
    "obs_localization",
    "FilterResult",
    "run_filter",
    "checked_schedule",
    "etkf_inputs",
    "etkf_weights",
    "inflation_factor",
    "inflate",
]

Advance = Callable[[Tensor, float], Tensor]
#: an elementwise map ``g`` of nonlinear observations ``y = g(H x) + e`` (``None``: linear)
ObsFn = Union[Callable[[Tensor], Tensor], None]
Observations = Union[Mapping[int, Tensor], tuple[Union[Tensor, Sequence[int]], Tensor]]


# --------------------------------------------------------------------------------------------------------------
# input checks


def _check_ensemble(ens: Tensor) -> None:
    if ens.ndim < 2:
        raise ValueError(f"an ensemble is [..., M, D]; got shape {tuple(ens.shape)}")
    if ens.shape[-2] < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got M = {ens.shape[-2]}")
    if not torch.isfinite(ens).all():
        raise ValueError("the ensemble has non-finite values")


def _check_obs(y: Tensor, H: Tensor, dim: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """``y`` ``[..., P]`` and ``H`` ``[P, D]`` cast to ``like``'s dtype/device, shapes and finiteness checked."""
    H = torch.as_tensor(H, dtype=like.dtype, device=like.device)
    y = torch.as_tensor(y, dtype=like.dtype, device=like.device)
    if H.ndim != 2:
        raise ValueError(f"H must be a matrix [P, D], got shape {tuple(H.shape)}")
    if H.shape[1] != dim:
        raise ValueError(f"H is [P, D] = {tuple(H.shape)} but the state has D = {dim} variables")
    if y.ndim < 1 or y.shape[-1] != H.shape[0]:
        raise ValueError(f"observations y must be [..., P] with P = {H.shape[0]} (rows of H), got {tuple(y.shape)}")
    if not torch.isfinite(y).all():
        raise ValueError("observations y contain non-finite values (NaN/inf); drop them from H and y instead")
    if not torch.isfinite(H).all():
        raise ValueError("H contains non-finite values")
    return y, H


def observation_std(obs_std: float | Tensor, num_obs: int, like: Tensor) -> Tensor:
    """Observation-error std as a ``[P]`` tensor (a scalar is broadcast)."""
    std = torch.as_tensor(obs_std, dtype=like.dtype, device=like.device)
    if std.ndim == 0:
        std = std.expand(num_obs)
    if std.shape != (num_obs,):
        raise ValueError(f"obs_std must be a scalar or [P] with P = {num_obs}, got shape {tuple(std.shape)}")
    if not (torch.isfinite(std).all() and (std > 0).all()):
        raise ValueError("obs_std must be finite and > 0")
    return std


# --------------------------------------------------------------------------------------------------------------
# analysis steps


def enkf_analysis(
    ens: Tensor,
    y: Tensor,
    H: Tensor,
    obs_std: float | Tensor,
    *,
    generator: torch.Generator,
    localization: Tensor | None = None,
) -> Tensor:
    """Stochastic (perturbed-observation) EnKF analysis (Burgers et al. 1998; Evensen 2009).

    Each member is updated with its own perturbed observation ``y + e_i``, ``e_i ~ N(0, R)`` (drawn with
    ``generator``, not re-centred): ``x_i^a = x_i + K (y + e_i - H x_i)``, ``K = P H^T (H P H^T + R)^-1`` with ``P``
    the ensemble covariance (``M - 1`` denominator).  With ``localization`` (a ``[D, D]`` Schur taper ``rho``,
    e.g. :func:`ring_localization`) ``P`` is replaced by ``rho o P`` (B-localisation); this forms the ``[D, D]``
    covariance, so it is meant for small ``D``.  Without it only ``[D, P]`` and ``[P, P]`` matrices are formed.

    Args:
        ens: forecast ensemble ``[..., M, D]``.
        y: observation ``[P]`` or ``[..., P]`` (broadcast against the batch shape).
        H: linear observation operator ``[P, D]``.
        obs_std: observation-error std, scalar or ``[P]``.
        generator: source of the observation perturbations.
        localization: optional taper ``[D, D]`` (or ``[..., D, D]``).

    Returns:
        The analysis ensemble ``[..., M, D]``.
    """
    _check_ensemble(ens)
    m, d = ens.shape[-2], ens.shape[-1]
    y, H = _check_obs(y, H, d, ens)
    std = observation_std(obs_std, H.shape[0], ens)
    X = ens - ens.mean(-2, keepdim=True)  # [..., M, D]
    HX = X @ H.T  # [..., M, P]
    if localization is None:
        PHt = X.transpose(-1, -2) @ HX / (m - 1)  # [..., D, P]
        S = HX.transpose(-1, -2) @ HX / (m - 1)  # [..., P, P]
    else:
        rho = _check_taper(localization, (d, d), ens)
        P = rho * (X.transpose(-1, -2) @ X / (m - 1))  # [..., D, D]
        PHt = P @ H.T
        S = H @ PHt
    S = S + torch.diag_embed(std**2)
    noise = torch.randn(ens.shape[:-1] + (H.shape[0],), generator=generator, dtype=ens.dtype, device=ens.device)
    innov = y.unsqueeze(-2) + noise * std - ens @ H.T  # [..., M, P]
    L = torch.linalg.cholesky(S)
    gain_t = torch.cholesky_solve(PHt.transpose(-1, -2), L)  # K^T = S^-1 (P H^T)^T   [..., P, D]
    return ens + innov @ gain_t


def etkf_analysis(
    ens: Tensor,
    y: Tensor,
    H: Tensor,
    obs_std: float | Tensor,
    *,
    localization: Tensor | None = None,
    rotate: bool = False,
    generator: torch.Generator | None = None,
    obs_fn: ObsFn = None,
) -> Tensor:
    """Ensemble transform Kalman filter analysis with the symmetric square root (Hunt et al. 2007).

    In ensemble space, with scaled anomalies ``Y = R^-1/2 H X`` ``[M, P]`` and innovation ``d = R^-1/2 (y - H xbar)``:
    ``A = (M - 1) I + Y Y^T``, ``w = A^-1 Y d``, ``W = sqrt(M - 1) A^-1/2`` (symmetric) and member ``i`` of the
    analysis is ``xbar + X^T (w + W[:, i])``.  The analysis mean and covariance (``M - 1`` denominator) equal the
    Kalman analysis of the ensemble's own mean and covariance exactly, and ``W 1 = 1`` keeps the mean of the
    anomalies at zero.  For ``M <= P`` this eigendecomposes the ``M x M`` matrix ``A``; for ``M > P`` the same
    transform is computed from the ``P x P`` matrix ``Y^T Y`` (cost ``O(M P (P + D))``, fine for ``M = 2000``).

    With ``localization`` (an observation-space taper ``[D, P]``, see :func:`obs_localization`) this is the LETKF:
    every state variable ``j`` gets its own analysis with ``R^-1`` weighted by ``localization[j]`` (R-localisation;
    an observation with weight 0 is ignored), computed for all variables at once as ``[D, M, M]`` problems
    (``D`` eigendecompositions of ``M x M`` matrices per analysis).

    With ``rotate`` the analysis anomalies are finally mixed by a random mean-preserving orthogonal matrix
    (:func:`random_mean_preserving_rotation`, drawn with ``generator``), which keeps the analysis mean and
    covariance and breaks up the outlier members that deterministic square-root filters grow with large
    ensembles in nonlinear models (Lawson & Hansen 2004; Sakov & Oke 2008).

    Args:
        ens: forecast ensemble ``[..., M, D]``.
        y: observation ``[P]`` or ``[..., P]``.
        H: linear observation operator ``[P, D]``.
        obs_std: observation-error std, scalar or ``[P]``.
        localization: optional ``[D, P]`` (or ``[..., D, P]``) weights in ``[0, 1]``.
        rotate: apply a random mean-preserving rotation to the analysis anomalies (needs ``generator``).
        generator: random source of the rotation.
        obs_fn: nonlinear observations ``y = obs_fn(H x) + e`` (elementwise; ``None``: linear).

    Returns:
        The analysis ensemble ``[..., M, D]``.
    """
    if rotate and generator is None:
        raise ValueError("rotate=True needs an explicit torch.Generator")
    ana = _etkf_transform(ens, y, H, obs_std, localization, obs_fn)
    if not rotate:
        return ana
    mean = ana.mean(-2, keepdim=True)
    rot = random_mean_preserving_rotation(ens.shape[-2], generator, batch_shape=ana.shape[:-2], dtype=ana.dtype)
    return mean + rot @ (ana - mean)


def random_mean_preserving_rotation(
    m: int, generator: torch.Generator, batch_shape: tuple[int, ...] = (), dtype: torch.dtype = torch.float64
) -> Tensor:
    """Haar-random orthogonal ``[..., M, M]`` matrices ``Q`` with ``Q 1 = 1`` (so also ``Q^T 1 = 1``).

    ``Q = 1 1^T / M + F E^T`` with ``E`` the Helmert basis of the complement of ``1`` and ``F`` a Haar-random
    orthonormal frame of the same space (QR of centred Gaussian columns, signs fixed).  Applied to anomalies
    ``[M, D]`` as ``Q @ X`` it keeps their zero mean and their covariance ``X^T X``.
    """
    if m < 2:
        raise ValueError(f"need M >= 2, got {m}")
    device = generator.device
    k = torch.arange(1, m, dtype=dtype, device=device)  # Helmert columns e_k, k = 1..M-1
    rows = torch.arange(m, device=device)[:, None]
    E = torch.where(rows < k[None, :], 1.0, torch.where(rows == k[None, :], -k[None, :], 0.0))
    E = (E / torch.sqrt(k * (k + 1))).to(dtype)
    G = torch.randn(*batch_shape, m, m - 1, generator=generator, dtype=dtype, device=device)
    Q, R = torch.linalg.qr(G - G.mean(-2, keepdim=True))
    F = Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1)).unsqueeze(-2)
    return torch.full((m, m), 1.0 / m, dtype=dtype, device=device) + F @ E.T


def observe_members(ens: Tensor, H: Tensor, obs_fn: ObsFn = None) -> Tensor:
    """``g(H x_i)`` for every member: ``[..., M, D] -> [..., M, P]`` (``H x_i`` when ``obs_fn`` is None); a
    non-finite value is a ``FloatingPointError`` (the observation function left its domain)."""
    hx = ens @ H.T
    if obs_fn is None:
        return hx
    out = obs_fn(hx)
    if out.shape != hx.shape:
        raise ValueError(f"obs_fn must be elementwise: it mapped {tuple(hx.shape)} to {tuple(out.shape)}")
    if not torch.isfinite(out).all():
        raise FloatingPointError("obs_fn gave non-finite observations of the ensemble")
    return out


def etkf_inputs(ens: Tensor, y: Tensor, H: Tensor, obs_std: float | Tensor,
                obs_fn: ObsFn = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Checked inputs of an ETKF analysis: the ensemble mean ``[..., 1, D]``, anomalies ``X [..., M, D]``, scaled
    observation anomalies ``Y = R^-1/2 H X [..., M, P]`` and scaled innovation ``d = R^-1/2 (y - H xbar) [..., P]``;
    with ``obs_fn`` (nonlinear observations) the anomalies and mean of the members' observations ``g(H x_i)``."""
    _check_ensemble(ens)
    y, H = _check_obs(y, H, ens.shape[-1], ens)
    std = observation_std(obs_std, H.shape[0], ens)
    mean = ens.mean(-2, keepdim=True)
    X = ens - mean
    if obs_fn is None:
        return mean, X, (X @ H.T) / std, (y - (mean @ H.T).squeeze(-2)) / std
    hx = observe_members(ens, H, obs_fn)
    hbar = hx.mean(-2, keepdim=True)
    return mean, X, (hx - hbar) / std, (y - hbar.squeeze(-2)) / std


def etkf_weights(Y: Tensor, innov: Tensor) -> tuple[Tensor, Tensor]:
    """The ETKF's ensemble-space mean weights ``w = A^-1 Y d [..., M, 1]`` and symmetric square-root transform
    ``W = sqrt(M - 1) A^-1/2 [..., M, M]``, ``A = (M - 1) I + Y Y^T`` (eigendecomposition of the ``M x M`` ``A``)."""
    m = Y.shape[-2]
    evals, Q = torch.linalg.eigh((m - 1) * torch.eye(m, dtype=Y.dtype, device=Y.device) + Y @ Y.transpose(-1, -2))
    w = Q @ ((Q.transpose(-1, -2) @ (Y @ innov.unsqueeze(-1))) / evals.unsqueeze(-1))
    W = (Q * (math.sqrt(m - 1) / evals.sqrt()).unsqueeze(-2)) @ Q.transpose(-1, -2)
    return w, W


def inflation_factor(inflation: float | Tensor, like: Tensor) -> Tensor:
    """``inflation`` (a float or a tensor broadcastable to the batch shape) checked and shaped ``[..., 1, 1]``."""
    infl = torch.as_tensor(inflation, dtype=like.dtype, device=like.device)
    if not (torch.isfinite(infl).all() and (infl > 0).all()):
        raise ValueError("inflation must be finite and > 0")
    return infl[..., None, None]  # broadcast over [M, D]


def inflate(ens: Tensor, infl: Tensor) -> Tensor:
    """Multiply the anomalies of ``ens [..., M, D]`` by ``infl`` (from :func:`inflation_factor`)."""
    mean = ens.mean(-2, keepdim=True)
    return mean + infl * (ens - mean)


def _etkf_transform(
    ens: Tensor, y: Tensor, H: Tensor, obs_std: float | Tensor, localization: Tensor | None, obs_fn: ObsFn = None
) -> Tensor:
    """The deterministic (L)ETKF analysis of :func:`etkf_analysis`."""
    mean, X, Y, innov = etkf_inputs(ens, y, H, obs_std, obs_fn)
    m, d, p = ens.shape[-2], ens.shape[-1], Y.shape[-1]
    if localization is None and m <= p:
        w, W = etkf_weights(Y, innov)
        return mean + (w + W).transpose(-1, -2) @ X
    if localization is None:
        # M > P: the same transform from the P x P Gram matrix Y^T Y = V diag(s2) V^T, never forming M x M:
        # A^-1 Y = Y V diag(1 / lam) V^T and sqrt(M-1) A^-1/2 = I + Y V diag(g) V^T Y^T with lam = M - 1 + s2,
        # g = (sqrt((M-1) / lam) - 1) / s2 = -1 / (sqrt(lam) (sqrt(M-1) + sqrt(lam))) (no division by s2).
        s2, V = torch.linalg.eigh(Y.transpose(-1, -2) @ Y)
        lam = (m - 1) + s2.clamp(min=0)
        g = -1.0 / (lam.sqrt() * (math.sqrt(m - 1) + lam.sqrt()))
        YV = Y @ V  # [..., M, P]
        w = YV @ ((V.transpose(-1, -2) @ innov.unsqueeze(-1)) / lam.unsqueeze(-1))  # [..., M, 1]
        anomalies = X + YV @ (g.unsqueeze(-1) * (YV.transpose(-1, -2) @ X))
        return mean + w.transpose(-1, -2) @ X + anomalies
    rho = _check_taper(localization, (d, p), ens)  # [..., D, P]
    out = [torch.einsum("...jc,...cji->...ic", X[..., j : j + n], _letkf_weights(Y, innov, rho[..., j : j + n, :]))
           for j, n in _letkf_chunks(Y, rho)]
    return mean + torch.cat(out, -1)


#: the LETKF analyses variables in chunks whose ``[..., chunk, M, P]`` work tensors hold at most this many numbers
LETKF_CHUNK_ELEMENTS = 1 << 24


def _letkf_chunks(Y: Tensor, rho: Tensor) -> list[tuple[int, int]]:
    """``(first, count)`` of the chunks of variables analysed at once (see :data:`LETKF_CHUNK_ELEMENTS`)."""
    m, p, d = Y.shape[-2], Y.shape[-1], rho.shape[-2]
    batch = math.prod(torch.broadcast_shapes(rho.shape[:-2], Y.shape[:-2]))
    chunk = max(1, LETKF_CHUNK_ELEMENTS // max(1, batch * m * max(m, p)))
    return [(j, min(chunk, d - j)) for j in range(0, d, chunk)]


def _letkf_weights(Y: Tensor, innov: Tensor, rho: Tensor) -> Tensor:
    """The LETKF's ensemble-space weights ``T = w 1^T + W [..., C, M, M]`` of ``C`` variables, each from its own
    R-localised analysis (``rho [..., C, P]`` their observation weights): member ``i`` of variable ``c``'s analysis
    is ``mean_c + sum_j X[j, c] T[c, j, i]``."""
    m = Y.shape[-2]
    eye = torch.eye(m, dtype=Y.dtype, device=Y.device)
    Yl = Y.unsqueeze(-3) * rho.unsqueeze(-2)  # [..., C, M, P]: Y R_loc^-1 R^1/2 for every variable
    A = (m - 1) * eye + Yl @ Y.unsqueeze(-3).transpose(-1, -2)  # [..., C, M, M]
    evals, Q = torch.linalg.eigh(A)
    rhs = Yl @ innov.unsqueeze(-2).unsqueeze(-1)  # [..., C, M, 1]
    w = Q @ ((Q.transpose(-1, -2) @ rhs) / evals.unsqueeze(-1))  # [..., C, M, 1]
    W = (Q * (math.sqrt(m - 1) / evals.sqrt()).unsqueeze(-2)) @ Q.transpose(-1, -2)  # [..., C, M, M]
    return w + W


def letkf_transforms(ens: Tensor, y: Tensor, H: Tensor, obs_std: float | Tensor, localization: Tensor,
                     obs_fn: ObsFn = None) -> Tensor:
    """The LETKF analysis as one left transform per variable: ``G [..., D, M, M]`` with member ``i`` of variable
    ``d``'s analysis ``sum_j G[d, i, j] E[j, d]`` -- ``G_d = 1 1^T / M + (1 w_d^T + W_d) Pi`` (``Pi`` the centring
    matrix), the localised form of :func:`~physics.assimilation.smoothers.etkf_transform`.  ``localization`` is the
    observation taper ``[..., D, P]`` (:func:`obs_localization`).  Applying ``G_d`` to an earlier state's ensemble
    at variable ``d`` is the localised ensemble smoother's update of that state."""
    _, X, Y, innov = etkf_inputs(ens, y, H, obs_std, obs_fn)
    m, d = ens.shape[-2], ens.shape[-1]
    rho = _check_taper(localization, (d, Y.shape[-1]), ens)
    pi = torch.eye(m, dtype=ens.dtype, device=ens.device) - 1.0 / m
    T = torch.cat([_letkf_weights(Y, innov, rho[..., j : j + n, :]) for j, n in _letkf_chunks(Y, rho)], -3)
    return 1.0 / m + T.transpose(-1, -2) @ pi


def apply_transforms(G: Tensor, ens: Tensor) -> Tensor:
    """``E'[..., i, d] = sum_j G[..., d, i, j] E[..., j, d]``: per-variable transforms ``[..., D, M, M]`` applied to an
    ensemble ``[..., M, D]``."""
    return torch.einsum("...dij,...jd->...id", G, ens)


def kalman_analysis(
    mean: Tensor, cov: Tensor, y: Tensor, H: Tensor, obs_std: float | Tensor
) -> tuple[Tensor, Tensor]:
    """Exact Kalman analysis of a Gaussian prior ``N(mean [D], cov [D, D])``; returns ``(mean [D], cov [D, D])``.

    The covariance update uses the Joseph form ``(I - KH) P (I - KH)^T + K R K^T`` (symmetric, PSD).
    """
    d = mean.shape[-1]
    if cov.shape != (d, d) or mean.ndim != 1:
        raise ValueError(f"mean must be [D] and cov [D, D]; got {tuple(mean.shape)} and {tuple(cov.shape)}")
    y, H = _check_obs(y, H, d, mean)
    std = observation_std(obs_std, H.shape[0], mean)
    R = torch.diag(std**2)
    S = H @ cov @ H.T + R
    K = torch.linalg.solve(S, H @ cov).T  # P H^T S^-1 (S, P symmetric)
    ikh = torch.eye(d, dtype=mean.dtype, device=mean.device) - K @ H
    return mean + K @ (y - H @ mean), ikh @ cov @ ikh.T + K @ R @ K.T


def kalman_filter(
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
    """Exact Kalman filter of ``x_{k+1} = F x_k + w_k``, ``w_k ~ N(0, process_cov)``, on :func:`run_filter`'s schedule.

    Args:
        mean0: prior mean at state 0, ``[D]``.
        cov0: prior covariance at state 0, ``[D, D]``.
        F: transition matrix ``[D, D]`` between consecutive states.
        observations: as in :func:`run_filter`.
        H: observation operator ``[P, D]``.
        obs_std: observation noise std (scalar or ``[P]``).
        num_states: number of states ``T``.
        process_cov: ``[D, D]`` process-noise covariance (``None``: no noise).

    Returns:
        Filtering means ``[T, D]`` and covariances ``[T, D, D]`` (analysis at observed states, forecast elsewhere).
    """
    obs = _schedule(observations, num_states)
    means, covs = [], []
    m, c = mean0, cov0
    for k in range(num_states):
        if k > 0:
            m = F @ m
            c = F @ c @ F.T + (process_cov if process_cov is not None else 0.0)
        if k in obs:
            m, c = kalman_analysis(m, c, obs[k], H, obs_std)
        means.append(m)
        covs.append(c)
    return torch.stack(means), torch.stack(covs)


# --------------------------------------------------------------------------------------------------------------
# localisation


def gaspari_cohn(distance: Tensor, radius: float) -> Tensor:
    """The Gaspari & Cohn (1999, eq. 4.10) fifth-order piecewise rational taper.

    ``radius`` is their ``c``: the taper is 1 at distance 0, ``~0.208`` at ``c`` and exactly 0 from ``2 c`` on
    (compact support of half-width ``2 c``).  It is a correlation function, so the Schur product with a
    covariance stays positive semi-definite.  ``radius = 0`` gives the identity taper (1 at 0, else 0).
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    distance = torch.as_tensor(distance)
    if not distance.is_floating_point():
        distance = distance.to(torch.get_default_dtype())
    if radius == 0:
        return (distance == 0).to(distance.dtype)
    r = distance.abs() / radius
    inner = (((-0.25 * r + 0.5) * r + 0.625) * r - 5.0 / 3.0) * r**2 + 1.0
    rs = r.clamp(min=1e-12)
    outer = ((((r / 12.0 - 0.5) * r + 0.625) * r + 5.0 / 3.0) * r - 5.0) * r + 4.0 - 2.0 / (3.0 * rs)
    taper = torch.where(r <= 1, inner, torch.where(r < 2, outer, torch.zeros_like(r)))
    return taper.clamp(min=0.0)  # the outer branch rounds to ~-1e-7 just below 2c in float32


def ring_localization(dim: int, radius: float, dtype: torch.dtype = torch.float64) -> Tensor:
    """Gaspari-Cohn taper ``[D, D]`` for ``D`` equally spaced points on a periodic ring (e.g. Lorenz-96).

    Distance between variables ``i`` and ``j`` is ``min(|i - j|, D - |i - j|)`` grid steps; ``radius`` is the
    Gaspari-Cohn ``c`` in grid steps (zero correlation from ``2 c`` on).
    """
    return grid_localization((dim,), radius, dtype)


def grid_localization(shape: Sequence[int], radius: float, dtype: torch.dtype = torch.float64) -> Tensor:
    """Gaspari-Cohn taper ``[D, D]``, ``D = prod(shape)``, for the points of a periodic grid (a torus; e.g. a
    64 x 64 vorticity field, variables in row-major order).

    The distance between two points is the Euclidean norm of their per-axis periodic gaps
    ``min(|i - j|, n - |i - j|)``, in grid steps; ``radius`` is the Gaspari-Cohn ``c`` in grid steps.  A radius
    beyond the grid's diameter tapers nothing away; ``math.inf`` gives all ones (the global ETKF).
    """
    shape = tuple(int(n) for n in shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"shape must be a non-empty tuple of positive sizes, got {shape}")
    if math.isinf(radius):
        n = math.prod(shape)
        return torch.ones(n, n, dtype=dtype)
    coords = torch.stack(torch.meshgrid(*[torch.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, len(shape))
    gap = (coords[:, None, :] - coords[None, :, :]).abs()
    gap = torch.minimum(gap, torch.tensor(shape) - gap).to(dtype)
    return gaspari_cohn(gap.square().sum(-1).sqrt(), radius)


def obs_localization(state_taper: Tensor, H: Tensor) -> Tensor:
    """Observation-space taper ``[..., D, P]`` for the LETKF from a state taper ``[..., D, D]`` and ``H`` ``[P, D]``.

    Observation ``p`` is placed where its row of ``H`` puts weight: ``rho[j, p] = sum_k |H[p, k]| taper[j, k] /
    sum_k |H[p, k]|``.  For an observation of a single variable ``k`` this is exactly ``taper[j, k]``; an
    average over a block of variables gets the block-averaged taper.
    """
    H = torch.as_tensor(H, dtype=state_taper.dtype, device=state_taper.device)
    if state_taper.ndim < 2 or state_taper.shape[-1] != state_taper.shape[-2] or H.ndim != 2:
        raise ValueError(f"need a [D, D] taper and a [P, D] H; got {tuple(state_taper.shape)}, {tuple(H.shape)}")
    if H.shape[1] != state_taper.shape[-1]:
        raise ValueError(f"H {tuple(H.shape)} does not match the taper's D = {state_taper.shape[-1]}")
    weight = H.abs()
    total = weight.sum(-1)
    if (total == 0).any():
        raise ValueError("H has an all-zero row: an observation of nothing")
    return state_taper @ (weight / total[:, None]).T


def _check_taper(rho: Tensor, shape: tuple[int, int], like: Tensor) -> Tensor:
    rho = torch.as_tensor(rho, dtype=like.dtype, device=like.device)
    if rho.ndim < 2 or tuple(rho.shape[-2:]) != shape:
        raise ValueError(f"localization must be [..., {shape[0]}, {shape[1]}], got shape {tuple(rho.shape)}")
    return rho


# --------------------------------------------------------------------------------------------------------------
# cycling


@dataclass
class FilterResult:
    """Output of :func:`run_filter` for ``T`` states (leading batch shape ``...`` as the initial ensemble).

    Attributes:
        mean: ``[..., T, D]`` analysis means (the forecast mean at states without observations).
        spread: ``[..., T]`` ensemble spread ``sqrt(mean_j var_j)`` (unbiased variance over members) of the same
            ensembles as ``mean``.
        forecast_mean: ``[..., T, D]`` forecast (prior) means, before inflation and analysis.
        forecast_spread: ``[..., T]`` forecast spread, before inflation.
        observed: ``[T]`` bool, whether an analysis was made at that state.
        ensemble: ``[..., T, M, D]`` analysis ensembles if ``keep_ensemble``, else ``None``.
    """

    mean: Tensor
    spread: Tensor
    forecast_mean: Tensor
    forecast_spread: Tensor
    observed: Tensor
    ensemble: Tensor | None = None


def run_filter(
    advance: Advance,
    ens0: Tensor,
    observations: Observations,
    H: Tensor,
    obs_std: float | Tensor,
    *,
    interval: float,
    num_states: int,
    method: Literal["enkf", "etkf"] = "enkf",
    inflation: float | Tensor = 1.0,
    localization: Tensor | None = None,
    rotate: bool = False,
    generator: torch.Generator | None = None,
    keep_ensemble: bool = False,
    progress: bool = False,
    callback: Callable[[int, Tensor], None] | None = None,
    obs_fn: ObsFn = None,
) -> FilterResult:
    """Cycle an ensemble filter over states at times ``0, interval, ..., (num_states - 1) interval``.

    At state ``k`` the ensemble is (for ``k > 0``) advanced from state ``k - 1`` with ``advance(ens, interval)``
    (e.g. :meth:`LorenzSystem.advance`, which takes any ``[..., D]`` batch); if ``k`` is an observation time its
    anomalies are multiplied by ``inflation`` and it is analysed with ``method`` (state 0 included).

    Args:
        advance: model ``(ens [..., M, D], duration) -> ens``.
        ens0: initial ensemble ``[..., M, D]`` (``...``: independent filters run as one batch).
        observations: ``{k: y_k}`` or ``(obs_times [K] int, ys [K, P])``; ``y_k`` is ``[P]`` or ``[..., P]``.
        H: linear observation operator ``[P, D]`` (the same at every time).
        obs_std: observation-error std, scalar or ``[P]``.
        interval: time between consecutive states.
        num_states: number of states ``T``.
        method: ``"enkf"`` (stochastic, needs ``generator``) or ``"etkf"`` (deterministic square root).
        inflation: multiplicative anomaly inflation ``>= 1`` typically; a float or a tensor broadcastable to the
            batch shape ``...`` (e.g. ``[B]`` for a batch ``[B, M, D]`` of filters with different inflation).
        localization: state-space taper ``[D, D]`` (or ``[..., D, D]``), e.g. :func:`ring_localization`: used as
            B-localisation by the EnKF and turned into the LETKF's observation taper by :func:`obs_localization`.
        rotate: ETKF only: random mean-preserving rotation of the analysis anomalies (see :func:`etkf_analysis`).
        generator: random source of the EnKF's perturbed observations (and of the ETKF's rotations).
        keep_ensemble: also return the analysis ensembles ``[..., T, M, D]``.
        progress: show a tqdm progress bar.
        callback: called as ``callback(k, ens)`` with every analysis ensemble (e.g. for scores against a truth).
        obs_fn: nonlinear observations ``y = obs_fn(H x) + e`` (elementwise; ETKF only; ``None``: linear).

    Returns:
        A :class:`FilterResult`.
    """
    if method not in ("enkf", "etkf"):
        raise ValueError(f"method must be 'enkf' or 'etkf', got {method!r}")
    if method == "enkf" and generator is None:
        raise ValueError("the stochastic EnKF needs an explicit torch.Generator")
    if obs_fn is not None and method != "etkf":
        raise ValueError("nonlinear observations (obs_fn) need method='etkf': the stochastic EnKF here is linear")
    if rotate and (method != "etkf" or generator is None):
        raise ValueError("rotate=True is for method='etkf' and needs an explicit torch.Generator")
    d = ens0.shape[-1]
    obs = checked_schedule(ens0, observations, H, num_states)
    infl = inflation_factor(inflation, ens0)
    rho = None
    if localization is not None:
        rho = _check_taper(localization, (d, d), ens0)
        if method == "etkf":
            rho = obs_localization(rho, H)

    means, spreads, f_means, f_spreads, kept = [], [], [], [], []
    ens = ens0
    for k in progress_bar(range(num_states), enabled=progress, desc=f"{method} cycles", leave=False):
        if k > 0:
            ens = advance(ens, interval)
        f_means.append(ens.mean(-2))
        f_spreads.append(member_spread(ens))
        if k in obs:
            ens = inflate(ens, infl)
            if method == "enkf":
                ens = enkf_analysis(ens, obs[k], H, obs_std, generator=generator, localization=rho)
            else:
                ens = etkf_analysis(ens, obs[k], H, obs_std, localization=rho, rotate=rotate, generator=generator,
                                    obs_fn=obs_fn)
            if callback is not None:
                callback(k, ens)
        means.append(ens.mean(-2))
        spreads.append(member_spread(ens))
        if keep_ensemble:
            kept.append(ens)
    observed = torch.zeros(num_states, dtype=torch.bool)
    observed[list(obs)] = True
    return FilterResult(
        mean=torch.stack(means, -2),
        spread=torch.stack(spreads, -1),
        forecast_mean=torch.stack(f_means, -2),
        forecast_spread=torch.stack(f_spreads, -1),
        observed=observed,
        ensemble=torch.stack(kept, -3) if keep_ensemble else None,
    )


def member_spread(ens: Tensor) -> Tensor:
    """``sqrt(mean over variables of the unbiased member variance)`` of ``[..., M, D]`` -> ``[...]``."""
    return ens.var(-2, unbiased=True).mean(-1).sqrt()


def checked_schedule(ens0: Tensor, observations: Observations, H: Tensor, num_states: int) -> dict[int, Tensor]:
    """The checks every cycling method starts with -- ``num_states >= 1``, a usable initial ensemble, observations
    that fit ``H`` -- and the observations as ``{state index: y}``."""
    if num_states < 1:
        raise ValueError(f"num_states must be >= 1, got {num_states}")
    _check_ensemble(ens0)
    obs = _schedule(observations, num_states)
    for y in obs.values():
        _check_obs(y, H, ens0.shape[-1], ens0)
    return obs


def _schedule(observations: Observations, num_states: int) -> dict[int, Tensor]:
    """Normalise ``{k: y}`` or ``(times, ys)`` to a dict keyed by state index, with the indices checked."""
    if isinstance(observations, Mapping):
        obs = {int(k): torch.as_tensor(v) for k, v in observations.items()}
    else:
        try:
            times, ys = observations
        except (TypeError, ValueError):
            raise ValueError("observations must be a dict {k: y} or a pair (obs_times [K], ys [K, P])") from None
        times = torch.as_tensor(times)
        ys = torch.as_tensor(ys)
        if times.ndim != 1 or times.is_floating_point():
            raise ValueError(f"obs_times must be a 1-D integer tensor of state indices, got {times.dtype} "
                             f"{tuple(times.shape)}")
        if ys.shape[0] != times.shape[0]:
            raise ValueError(f"{times.shape[0]} observation times but ys has {ys.shape[0]} rows")
        if len(set(times.tolist())) != times.shape[0]:
            raise ValueError("obs_times has duplicates")
        obs = {int(k): y for k, y in zip(times.tolist(), ys)}
    bad = [k for k in obs if not 0 <= k < num_states]
    if bad:
        raise ValueError(f"observation times {bad[:5]} are outside the states 0..{num_states - 1}")
    return obs
