"""Closed-form flows between two Gaussians: reference answers for flow matching and OT couplings.

Data ``x_0 ~ N(m0, S0)`` at ``t = 0``, source ``x_1 ~ N(m1, S1)`` at ``t = 1`` (moldiff's time convention),
covariances full ``[d, d]``, float64.

* :class:`GaussianBridge` -- the :class:`~moldiff.diffusion.processes.FlowPath` between them with
  *independent* pairs (I-CFM, or SB-CFM's path with an independent plan): the marginal of ``x_t`` is
  Gaussian and the marginal velocity field that flow matching regresses is affine,

      v(x, t) = (m1 - m0) + C_t Sigma_t^{-1} (x - mu_t),
      mu_t = (1 - t) m0 + t m1,    Sigma_t = (1 - t)^2 S0 + t^2 S1 + s(t)^2 I,
      C_t = Cov(u_t, x_t) = t S1 - (1 - t) S0 + s(t) s'(t) I.

* :func:`gaussian_ot_map` -- the Monge map ``T(x) = m1 + A (x - m0)`` of the quadratic-cost OT problem from
  ``N(m0, S0)`` to ``N(m1, S1)`` (what OT-CFM's coupling tends to as the minibatch grows), and
  :func:`gaussian_w2` the Bures-Wasserstein distance between them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .processes import FlowPath

__all__ = ["GaussianBridge", "gaussian_ot_map", "gaussian_w2", "sqrtm_psd"]


def sqrtm_psd(S: Tensor) -> Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix ``[d, d]``."""
    w, V = torch.linalg.eigh(S)
    return (V * w.clamp(min=0).sqrt()) @ V.T


def gaussian_ot_map(m0: Tensor, S0: Tensor, m1: Tensor, S1: Tensor) -> tuple[Tensor, Tensor]:
    """``(A [d, d], b [d])`` with ``T(x) = A x + b`` the optimal (quadratic cost) map from ``N(m0, S0)`` to
    ``N(m1, S1)``: ``A = S0^{-1/2} (S0^{1/2} S1 S0^{1/2})^{1/2} S0^{-1/2}`` (symmetric positive definite)."""
    r = sqrtm_psd(S0)
    r_inv = torch.linalg.inv(r)
    A = r_inv @ sqrtm_psd(r @ S1 @ r) @ r_inv
    return A, m1 - A @ m0


def gaussian_w2(m0: Tensor, S0: Tensor, m1: Tensor, S1: Tensor) -> float:
    """Wasserstein-2 distance between ``N(m0, S0)`` and ``N(m1, S1)`` (the Bures formula)."""
    r = sqrtm_psd(S0)
    cross = sqrtm_psd(r @ S1 @ r)
    w2sq = (m0 - m1).square().sum() + torch.trace(S0 + S1 - 2 * cross)
    return float(w2sq.clamp(min=0).sqrt())


@dataclass
class GaussianBridge:
    """The independent-coupling flow-matching path between ``N(m0, S0)`` (data) and ``N(m1, S1)`` (source)."""

    m0: Tensor
    S0: Tensor
    m1: Tensor
    S1: Tensor
    path: FlowPath

    def __post_init__(self) -> None:
        self.m0, self.m1 = (torch.as_tensor(v, dtype=torch.float64) for v in (self.m0, self.m1))
        self.S0, self.S1 = (torch.as_tensor(v, dtype=torch.float64) for v in (self.S0, self.S1))

    def moments(self, t: float) -> tuple[Tensor, Tensor]:
        """``(mu_t [d], Sigma_t [d, d])`` of the marginal at time ``t``."""
        tt = torch.tensor(t, dtype=torch.float64)
        s = self.path.noise_std(tt)
        eye = torch.eye(len(self.m0), dtype=torch.float64)
        return (1 - tt) * self.m0 + tt * self.m1, (1 - tt) ** 2 * self.S0 + tt**2 * self.S1 + s**2 * eye

    def velocity(self, x: Tensor, t: Tensor) -> Tensor:
        """The exact marginal velocity ``[B, d]`` at per-sample times ``t [B]``."""
        xd, t = x.to(torch.float64), t.to(torch.float64).reshape(-1, 1, 1)
        s, ds = self.path.noise_std(t), self.path.noise_std_derivative(t)
        eye = torch.eye(len(self.m0), dtype=torch.float64)
        mu = (1 - t[:, :, 0]) * self.m0 + t[:, :, 0] * self.m1  # [B, d]
        Sig = (1 - t) ** 2 * self.S0 + t**2 * self.S1 + s**2 * eye  # [B, d, d]
        C = t * self.S1 - (1 - t) * self.S0 + s * ds * eye
        # C Sigma^{-1} (x - mu), with Sigma symmetric: solve Sigma y = (x - mu), then C y
        y = torch.linalg.solve(Sig, (xd - mu)[..., None])
        return ((self.m1 - self.m0) + (C @ y)[..., 0]).to(x.dtype)
