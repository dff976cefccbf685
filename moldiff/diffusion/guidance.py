"""Posterior sampling with a diffusion prior: observations ``y = A(x_0) + noise`` steer an unconditional model.

The posterior score is the prior score plus ``grad_x log p(y | x_t)``, which is intractable; two
approximations of it, both through the model's denoised estimate ``x0_hat(x_t)``:

* **SDA** (Rozet & Louppe 2023, score-based data assimilation): ``p(y | x_t) ~ N(y | A(x0_hat),
  Sigma_y + gamma (sigma_t / alpha_t)^2 I)`` -- the extra variance accounts for the denoiser's own error,
  so the guidance fades in as the noise falls.  :class:`PosteriorDenoiser` is a :class:`Denoiser` whose
  ``eps`` is the guided one, so every sampler samples the posterior; SDA uses predictor-corrector with a
  DDIM predictor and Langevin corrections (``sample_pc(..., predictor="ddim")``).
* **DPS** (Chung et al. 2023, diffusion posterior sampling): after each ancestral step, ``x <- x - zeta
  grad_{x_t} ||r||`` with the whitened residual ``r = (y - A(x0_hat)) / sigma_y`` -- Chung et al.'s
  ``zeta' / ||r|| * grad ||r||^2`` with ``zeta = 2 zeta'``.  :func:`sample_dps`.

Both need ``A`` to be differentiable (the observation operators of :mod:`physics.assimilation` are linear).
Pure math on states: the operator is any callable ``x [B, *event] -> [B, P]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .denoiser import Denoiser
from .samplers import Callback, _finish, _steps, ancestral_update

__all__ = ["GaussianObservation", "PosteriorDenoiser", "sample_dps"]


@dataclass
class GaussianObservation:
    """``y = A(x) + N(0, diag(noise_std^2))``.

    Args:
        y: observations ``[B, P]`` (one row per sample) or ``[P]`` (shared by every sample).
        operator: ``A``: states ``[B, *event] -> [B, P]``, differentiable.
        noise_std: scalar or ``[P]``.
    """

    y: Tensor
    operator: Callable[[Tensor], Tensor]
    noise_std: float | Tensor

    def __post_init__(self):
        if not torch.isfinite(self.y).all():
            raise ValueError("observations contain NaN or inf")
        std = torch.as_tensor(self.noise_std)
        if not (std > 0).all():
            raise ValueError(f"noise_std must be > 0, got {self.noise_std}")

    def residual(self, x: Tensor) -> Tensor:
        """Whitened residual ``(y - A(x)) / noise_std``, ``[B, P]``."""
        ax = self.operator(x)
        if ax.shape[-1] != self.y.shape[-1]:
            raise ValueError(f"the operator gives {ax.shape[-1]} values per sample, the observations have {self.y.shape[-1]}")
        return (self.y.to(ax) - ax) / torch.as_tensor(self.noise_std).to(ax)

    def log_likelihood(self, x: Tensor) -> Tensor:
        """``log p(y | x)`` up to a constant, ``[B]``."""
        return -0.5 * self.residual(x).square().sum(-1)


def _x0_and_eps(model: Denoiser, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    eps = model.eps(x, t)
    alpha, sigma = model.process.marginal(t)
    a, s = model.space.expand(alpha, x).to(x.dtype), model.space.expand(sigma, x).to(x.dtype)
    return (x - s * eps) / a, eps, alpha.to(x.dtype), s


class PosteriorDenoiser(Denoiser):
    """SDA's guided denoiser: ``eps_post = eps_hat - sigma_t grad_{x_t} log N(y | A(x0_hat), Sigma_y + gamma (sigma_t/alpha_t)^2)``.

    Args:
        prior: the unconditional model (any prediction kind).
        observation: the observations and their operator.
        gamma: variance of the denoiser's error per unit ``(sigma_t / alpha_t)^2`` (SDA's ``Gamma = gamma I``);
            0 gives the plain ``p(y | x0_hat)`` guidance.
    """

    def __init__(self, prior: Denoiser, observation: GaussianObservation, gamma: float = 1e-2):
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        super().__init__(self._guided_eps, prior.process, kind="eps", space=prior.space)
        self.prior = prior
        self.observation = observation
        self.gamma = gamma

    def _guided_eps(self, x: Tensor, t: Tensor) -> Tensor:
        obs = self.observation
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            x0, eps, alpha, sigma = _x0_and_eps(self.prior, xg, t)
            _, sig = self.process.marginal(t)
            var = torch.as_tensor(obs.noise_std).to(x) ** 2 + self.gamma * ((sig.to(x) / alpha) ** 2)[:, None]
            ax = obs.operator(x0)
            log_p = -0.5 * ((obs.y.to(ax) - ax).square() / var).sum()
            (grad,) = torch.autograd.grad(log_p, xg)
        return (eps - sigma * grad).detach()


def sample_dps(
    model: Denoiser,
    x: Tensor,
    ts: Tensor,
    *,
    observation: GaussianObservation,
    zeta: float = 1.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    denoise: bool = True,
) -> Tensor:
    """Diffusion posterior sampling along ``ts``: an ancestral step, then ``x -= zeta grad_{x_t} ||r(x0_hat)||``."""
    if zeta < 0:
        raise ValueError(f"zeta must be >= 0, got {zeta}")
    for i in _steps(ts, progress, "dps"):
        t, s = ts[i], ts[i + 1]
        tb = model.batch_time(t, x)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            x0, eps, _, _ = _x0_and_eps(model, xg, tb)
            norm = observation.residual(x0).square().sum(-1).clamp(min=1e-30).sqrt()
            (grad,) = torch.autograd.grad(norm.sum(), xg)
        x = ancestral_update(model, x.detach(), eps.detach(), t, s, generator) - zeta * grad
        if callback is not None:
            callback({"i": i, "t": s, "x": x})
    return _finish(model, x, ts, denoise)
