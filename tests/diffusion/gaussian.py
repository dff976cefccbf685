"""Exact Gaussian targets: the score, marginals and flow map of N(mu, diag(s2)) under any process."""

from __future__ import annotations

import math

import torch

from moldiff.diffusion import Denoiser, EuclideanSpace, Process


class GaussianTarget:
    """Data ``x0 ~ N(mu, diag(s2))``; under ``x_t = alpha x0 + sigma eps`` the marginal is
    ``N(alpha mu, alpha^2 s2 + sigma^2)`` and the score is exact."""

    def __init__(self, process: Process, mu, s2):
        self.process = process
        self.mu = torch.as_tensor(mu, dtype=torch.float64)
        self.s2 = torch.as_tensor(s2, dtype=torch.float64)

    def moments(self, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        alpha, sigma = self.process.marginal(torch.tensor(t, dtype=torch.float64))
        return alpha * self.mu, alpha**2 * self.s2 + sigma**2

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.process.marginal(t.to(torch.float64))
        alpha, sigma = alpha[:, None], sigma[:, None]
        return (-(x - alpha * self.mu) / (alpha**2 * self.s2 + sigma**2)).to(x.dtype)

    def denoiser(self) -> Denoiser:
        return Denoiser(self.score, self.process, kind="score", space=EuclideanSpace())

    def sample(self, t: float, n: int, generator: torch.Generator) -> torch.Tensor:
        m, v = self.moments(t)
        return m + v.sqrt() * torch.randn(n, len(self.mu), generator=generator, dtype=torch.float64)

    def logp(self, x: torch.Tensor, t: float) -> torch.Tensor:
        m, v = self.moments(t)
        return (-0.5 * (x - m) ** 2 / v - 0.5 * torch.log(2 * math.pi * v)).sum(-1)

    def flow_map(self, x1: torch.Tensor, t: float) -> torch.Tensor:
        """Exact probability-flow ODE solution from ``t = 1`` to ``t`` (it is affine for a Gaussian)."""
        m1, v1 = self.moments(1.0)
        m, v = self.moments(t)
        return m + (v / v1).sqrt() * (x1 - m1)
