"""Posterior sampling with a diffusion prior: observations ``y = A(x_0) + noise`` steer an unconditional model.

The posterior score is the prior score plus ``grad_x log p(y | x_t)``, which is intractable; three
approximations of it, all through the model's denoised estimate ``x0_hat(x_t)``:

* **SDA** (Rozet & Louppe 2023, score-based data assimilation): ``p(y | x_t) ~ N(y | A(x0_hat),
  Sigma_y + gamma (sigma_t / alpha_t)^2 I)`` -- the extra variance accounts for the denoiser's own error,
  so the guidance fades in as the noise falls.  :class:`PosteriorDenoiser` is a :class:`Denoiser` whose
  ``eps`` is the guided one, so every sampler samples the posterior; SDA uses predictor-corrector with a
  DDIM predictor and Langevin corrections (``sample_pc(..., predictor="ddim")``).
* **MMPS** (Rozet et al. 2024, moment-matching posterior sampling): ``p(y | x_t) ~ N(y | A x0_hat,
  Sigma_y + A V A^T)`` with Tweedie's covariance ``V = Cov[x0 | x_t] = (sigma_t^2 / alpha_t) d x0_hat / d x_t``
  in place of SDA's ``gamma (sigma_t / alpha_t)^2 I``.  The Jacobian is never formed: ``A V A^T`` is applied
  through vector-Jacobian products and the system is solved by a few conjugate-gradient iterations.  Exact
  for a Gaussian prior and a linear operator.  :class:`MMPSDenoiser`, a :class:`Denoiser` like SDA's, so
  every sampler (ODE, DDIM, ancestral, SDE, predictor-corrector) samples the posterior with it.
* **DPS** (Chung et al. 2023, diffusion posterior sampling): after each ancestral step, ``x <- x - zeta
  grad_{x_t} ||r||`` with the whitened residual ``r = (y - A(x0_hat)) / sigma_y`` -- Chung et al.'s
  ``zeta' / ||r|| * grad ||r||^2`` with ``zeta = 2 zeta'``.  :func:`sample_dps`.

All need ``A`` to be differentiable (the observation operators of :mod:`physics.assimilation` are linear;
MMPS linearises a nonlinear one at ``x0_hat``).  Pure math on states: the operator is any callable
``x [B, *event] -> [B, P]`` (``B`` = ``space.num_samples(x)``, e.g. graphs of a point cloud).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .denoiser import Denoiser
from .samplers import Callback, ancestral_update, sample_steps

__all__ = ["GaussianObservation", "PosteriorDenoiser", "MMPSDenoiser", "sample_dps"]


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
        self.check()

    def check(self) -> None:
        """``ValueError`` for non-finite observations, ``y`` not ``[P]`` or ``[B, P]``, or a ``noise_std`` that is
        not positive or not a scalar / ``[P]`` (run at construction, and again by users of the fields, which
        may have been reassigned since)."""
        y = torch.as_tensor(self.y)
        if not torch.isfinite(y).all():
            raise ValueError("observations contain NaN or inf")
        if y.dim() not in (1, 2):
            raise ValueError(f"observations must have shape [P] or [B, P], got {tuple(y.shape)}")
        std = torch.as_tensor(self.noise_std)
        if not (std > 0).all():
            raise ValueError(f"noise_std must be > 0, got {self.noise_std}")
        if std.dim() > 1 or (std.dim() == 1 and std.numel() not in (1, y.shape[-1])):
            raise ValueError(f"noise_std must be a scalar or [P] = [{y.shape[-1]}], got shape {tuple(std.shape)}")

    def residual(self, x: Tensor) -> Tensor:
        """Whitened residual ``(y - A(x)) / noise_std``, ``[B, P]``."""
        ax = self.operator(x)
        if ax.shape[-1] != self.y.shape[-1]:
            raise ValueError(f"the operator gives {ax.shape[-1]} values per sample, the observations have {self.y.shape[-1]}")
        return (self.y.to(ax) - ax) / torch.as_tensor(self.noise_std).to(ax)

    def through(self, decoder: Callable[[Tensor], Tensor]) -> "GaussianObservation":
        """The same observations, of ``decoder(z)``: operator ``A(D(z))`` -- for a prior over latent states ``z``
        whose decoder ``D`` maps them to the states ``A`` observes (latent assimilation).  ``D`` must be
        differentiable for the guidance."""
        operator = self.operator
        return GaussianObservation(self.y, lambda z: operator(decoder(z)), self.noise_std)

    def log_likelihood(self, x: Tensor) -> Tensor:
        """``log p(y | x)`` up to a constant, ``[B]``."""
        return -0.5 * self.residual(x).square().sum(-1)


def _x0_and_eps(model: Denoiser, x: Tensor, t: Tensor, cond=None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    eps = model.eps(x, t, cond)
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

    def _guided_eps(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        obs = self.observation
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            x0, eps, alpha, sigma = _x0_and_eps(self.prior, xg, t, cond)
            _, sig = self.process.marginal(t)
            var = torch.as_tensor(obs.noise_std).to(x) ** 2 + self.gamma * ((sig.to(x) / alpha) ** 2)[:, None]
            ax = obs.operator(x0)
            log_p = -0.5 * ((obs.y.to(ax) - ax).square() / var).sum()
            (grad,) = torch.autograd.grad(log_p, xg)
        return (eps - sigma * grad).detach()


def _batched_cg(matvec: Callable[[Tensor], Tensor], b: Tensor, iterations: int) -> Tensor:
    """``iterations`` conjugate-gradient steps from ``u = 0`` on ``M u = b`` for every row of ``b [B, P]``.

    ``matvec`` applies each sample's symmetric positive-definite ``M`` to a ``[B, P]`` batch; the step sizes
    are per sample (a row whose residual vanished stops moving).  ``P`` iterations solve the system exactly
    in exact arithmetic."""
    u = torch.zeros_like(b)
    r = b
    p = r
    rr = (r * r).sum(-1, keepdim=True)
    tiny = torch.finfo(b.dtype).tiny
    zero = torch.zeros_like(rr)
    for _ in range(iterations):
        mp = matvec(p)
        pmp = (p * mp).sum(-1, keepdim=True)
        step = torch.where(pmp.abs() > tiny, rr / pmp, zero)
        u = u + step * p
        r = r - step * mp
        rr_new = (r * r).sum(-1, keepdim=True)
        p = r + torch.where(rr > tiny, rr_new / rr, zero) * p
        rr = rr_new
    return u


class MMPSDenoiser(Denoiser):
    """Moment-matching posterior sampling (Rozet et al. 2024): the denoiser of ``p(x_t | y)`` under
    ``p(y | x_t) ~ N(y | A x0_hat, Sigma_y + A V A^T)``, ``V = Cov[x0 | x_t] = (sigma_t^2 / alpha_t) J``,
    ``J = d x0_hat / d x_t`` (Tweedie's second moment).

    Its ``eps`` is ``eps_hat - sigma_t g`` with ``g = J^T A^T u`` and ``u = (Sigma_y + A V A^T)^{-1}
    (y - A x0_hat)``: the score of that Gaussian with the covariance held constant, as in the paper.  The
    guided posterior mean is therefore ``x0 = x0_hat + V A^T u`` (``J`` of an exact denoiser is symmetric,
    the Hessian of a log-density plus identity, and MMPS uses ``J^T`` for ``J``), which :meth:`x0` returns.
    Any sampler that takes a :class:`Denoiser` samples the posterior with it.

    Nothing of size ``D x D`` or ``P x P`` is formed: ``A V A^T v`` is one vector-Jacobian product of
    ``x_t -> A(x0_hat(x_t))`` (giving ``J^T A^T v``), scaled by ``sigma_t^2 / alpha_t`` and mapped by ``A``
    (a Jacobian-vector product of the operator, computed by double backward), and the ``[B, P]`` system is
    solved by ``cg_iterations`` batched conjugate-gradient steps with per-sample step sizes.  One call costs
    one network evaluation and ``cg_iterations + 1`` backward passes through the network.

    A nonlinear operator is linearised at ``x0_hat``: ``A`` above is its Jacobian there, and the residual is
    ``y - A(x0_hat)`` (the extended-Kalman update).  For a Gaussian prior with its exact denoiser and a linear
    operator, ``p(y | x_t)`` is exactly this Gaussian, so with ``cg_iterations >= P`` the guided ``x0`` is the
    exact ``E[x0 | x_t, y]`` and the guided score is the exact posterior score.

    Shapes: states ``x [B, *event]`` (or any layout of the prior's ``space``, ``B = space.num_samples(x)``),
    times ``t [B]``; the operator maps states to ``[B, P]``; ``observation.y`` is ``[B, P]`` or ``[P]``
    (shared); ``observation.noise_std`` a scalar or ``[P]`` (``Sigma_y = diag(noise_std^2)``).

    Works with any Gaussian process of the core (VP, sub-VP, VE, discrete DDPM) through
    ``process.marginal``; not with a :class:`~moldiff.diffusion.processes.FlowPath` prior (``alpha(1) = 0``,
    and its denoiser predicts velocities).

    Args:
        prior: the unconditional model (any prediction kind); differentiable in ``x``.
        observation: the observations, their noise and the (differentiable) operator.
        cg_iterations: conjugate-gradient iterations per evaluation (the paper uses 1 to 5; ``P`` solve exactly).
    """

    def __init__(self, prior: Denoiser, observation: GaussianObservation, cg_iterations: int = 3):
        if isinstance(cg_iterations, bool) or not isinstance(cg_iterations, numbers.Integral) or cg_iterations < 1:
            raise ValueError(f"cg_iterations must be an integer >= 1, got {cg_iterations!r}")
        observation.check()
        super().__init__(self._guided_eps, prior.process, kind="eps", space=prior.space)
        self.prior = prior
        self.observation = observation
        self.cg_iterations = int(cg_iterations)

    def _guided_eps(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        obs = self.observation
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            x0, eps, alpha, sigma = _x0_and_eps(self.prior, xg, t, cond)
            y_hat = obs.operator(x0)
            y = obs.y.to(y_hat)
            if y_hat.dim() != 2 or y_hat.shape[-1] != y.shape[-1]:
                raise ValueError(f"the operator gives {tuple(y_hat.shape)} values, the observations have "
                                 f"{y.shape[-1]} per sample (expected [B, {y.shape[-1]}])")
            if y.dim() == 2 and y.shape[0] != y_hat.shape[0]:
                raise ValueError(f"observations for {y.shape[0]} samples, states for {y_hat.shape[0]}")
            # the operator's Jacobian at x0_hat, A w = d/dv <A^T v, w>: A^T v is linear in the probe v
            probe = torch.zeros_like(y_hat, requires_grad=True)
            (at_probe,) = torch.autograd.grad(y_hat, x0, probe, create_graph=True)
        var_y = torch.as_tensor(obs.noise_std).to(y_hat) ** 2
        _, sig = self.process.marginal(t)
        scale = self.space.expand(sig.to(x.dtype) ** 2 / alpha, x)  # V = scale * J

        def vjp(v: Tensor, retain: bool = True) -> Tensor:  # J^T A^T v, [*x.shape]
            return torch.autograd.grad(y_hat, xg, v, retain_graph=retain)[0]

        def cov_y(v: Tensor) -> Tensor:  # (Sigma_y + A V A^T) v, [B, P]
            (a_w,) = torch.autograd.grad(at_probe, probe, scale * vjp(v), retain_graph=True)
            return var_y * v + a_w

        u = _batched_cg(cov_y, (y - y_hat).detach(), self.cg_iterations)
        grad = vjp(u, retain=False)
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
    cond=None,
) -> Tensor:
    """Diffusion posterior sampling along ``ts``: an ancestral step, then ``x -= zeta grad_{x_t} ||r(x0_hat)||``."""
    if zeta < 0:
        raise ValueError(f"zeta must be >= 0, got {zeta}")

    def step(model, x, t, s, generator, cond):
        tb = model.batch_time(t, x)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            x0, eps, _, _ = _x0_and_eps(model, xg, tb, cond)
            norm = observation.residual(x0).square().sum(-1).clamp(min=1e-30).sqrt()
            (grad,) = torch.autograd.grad(norm.sum(), xg)
        return ancestral_update(model, x.detach(), eps.detach(), t, s, generator) - zeta * grad

    return sample_steps(model, x, ts, step, generator=generator, callback=callback, progress=progress,
                        denoise=denoise, cond=cond, desc="dps")
