"""Samplers: plain functions ``sample_xxx(model, x, ts, *, generator, callback, progress)``.

``model`` is a :class:`~moldiff.diffusion.denoiser.Denoiser` (it carries the process and the state
space), ``x`` a prior sample at ``ts[0]`` (see :meth:`Process.prior_sample`), ``ts`` a decreasing time
grid (see :func:`~moldiff.diffusion.processes.time_grid`).  Each returns the final state.  With
``denoise=True`` the state at ``ts[-1]`` is replaced by the model's ``x0`` prediction (Tweedie's
denoising step).  ``callback`` receives ``{"i", "t", "x"}`` after each step.  Randomness comes only from
``generator``.  ``cond`` (optional) is handed to every model evaluation unchanged (a conditional model; see
:class:`~moldiff.diffusion.denoiser.Denoiser`).

* :func:`sample_ancestral` -- ancestral sampling from the Gaussian posterior ``q(x_s | x_t, x0_hat)``;
  on a DDPM schedule's full grid it is the DDPM chain.
* :func:`sample_ddim` -- the deterministic DDIM update ``x_s = alpha_s x0_hat + sigma_s eps_hat`` (the
  exponential integrator of the probability-flow ODE in eps form).
* :func:`sample_euler_maruyama` -- the reverse-time SDE, Euler-Maruyama.
* :func:`sample_pc` -- predictor-corrector: a Langevin corrector with target ``snr`` before each
  predictor step (Song et al. 2021); the predictor is Euler-Maruyama, ancestral or DDIM (the latter is
  the sampler of score-based data assimilation, Rozet & Louppe 2023).
* :func:`sample_ode` -- the probability-flow ODE (Euler, Heun, adaptive RK45).
* :func:`sample_heun_churn` -- EDM's second-order stochastic sampler (Karras et al. 2022, algorithm 2): Heun
  steps on the probability-flow ODE in the noise level ``s = sigma / alpha``, each after a "churn" that raises
  the noise level by ``gamma = min(s_churn / N, sqrt 2 - 1)`` with fresh noise; ``s_churn = 0`` is EDM's
  deterministic Heun sampler.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor
from ..progress import progress_bar

from .denoiser import Denoiser
from .ode import integrate_ode

__all__ = [
    "sample_steps",
    "Step",
    "sample_ancestral",
    "sample_ddim",
    "sample_euler_maruyama",
    "sample_pc",
    "sample_ode",
    "sample_heun_churn",
    "ancestral_update",
    "langevin_correct",
    "ODE_SAMPLERS",
    "PREDICTORS",
    "check_pc_options",
    "check_heun_churn_options",
]

Callback = Callable[[dict], None]


def step_bar(ts: Tensor, progress: bool, desc: str):
    return progress_bar(range(len(ts) - 1), enabled=progress, desc=desc, leave=False)


def denoise_end(model: Denoiser, x: Tensor, ts: Tensor, denoise: bool, cond=None) -> Tensor:
    return model.x0(x, model.batch_time(ts[-1], x), cond) if denoise else x


def ancestral_update(model: Denoiser, x: Tensor, eps: Tensor, t: Tensor, s: Tensor, generator) -> Tensor:
    """One draw from ``q(x_s | x_t, x0 = x0_hat)`` for ``s < t``, given the noise prediction ``eps`` at
    ``(x, t)`` (exposed so that guided samplers such as DPS reuse it with their own ``eps``)."""
    proc, space = model.process, model.space
    _, s_t = proc.marginal(t)
    _, s_s = proc.marginal(s)
    a_ts, var_ts = proc.transition(s, t)
    mean = x / a_ts - (var_ts / (a_ts * s_t)) * eps
    std = torch.sqrt(var_ts.clamp(min=0)) * s_s / s_t
    return mean + std * space.randn_like(x, generator)


def _ancestral_step(model: Denoiser, x: Tensor, t: Tensor, s: Tensor, generator, cond=None) -> Tensor:
    return ancestral_update(model, x, model.eps(x, model.batch_time(t, x), cond), t, s, generator)


def _ddim_step(model: Denoiser, x: Tensor, t: Tensor, s: Tensor, generator=None, cond=None) -> Tensor:
    """``x_s = alpha_s x0_hat + sigma_s eps_hat`` (deterministic; ``generator`` unused)."""
    eps = model.eps(x, model.batch_time(t, x), cond)
    a_t, s_t = model.process.marginal(t)
    a_s, s_s = model.process.marginal(s)
    return (a_s / a_t) * x + (s_s - (a_s / a_t) * s_t) * eps


def _em_step(model: Denoiser, x: Tensor, t: Tensor, s: Tensor, generator, cond=None) -> Tensor:
    """Euler-Maruyama on ``dx = [f x - g^2 score] dt + g dw`` from ``t`` to ``s < t``."""
    proc = model.process
    tb = model.batch_time(t, x)
    dt = s - t
    drift = proc.f(t) * x - proc.g2(t) * model.score(x, tb, cond)
    return x + drift * dt + torch.sqrt(proc.g2(t) * -dt) * model.space.randn_like(x, generator)


#: ``step(model, x, t, s, generator, cond) -> x_s``: one move of the reverse process from grid time ``t`` to ``s < t``
Step = Callable[..., Tensor]


def sample_steps(
    model: Denoiser,
    x: Tensor,
    ts: Tensor,
    step: Step,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    denoise: bool = True,
    cond=None,
    desc: str = "sampling",
) -> Tensor:
    """The one sampler loop: ``step`` from each grid time to the next along ``ts``, ``callback`` after each, and
    the model's ``x0`` at the end (``denoise``).  Ancestral, DDIM, Euler-Maruyama, predictor-corrector and DPS are
    this loop with their own step."""
    for i in step_bar(ts, progress, desc):
        x = step(model, x, ts[i], ts[i + 1], generator, cond)
        if callback is not None:
            callback({"i": i, "t": ts[i + 1], "x": x})
    return denoise_end(model, x, ts, denoise, cond)


def sample_ancestral(
    model: Denoiser,
    x: Tensor,
    ts: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    denoise: bool = True,
    cond=None,
) -> Tensor:
    """Ancestral sampling along ``ts`` (see module docstring)."""
    return sample_steps(model, x, ts, _ancestral_step, generator=generator, callback=callback, progress=progress,
                        denoise=denoise, cond=cond, desc="ancestral")


def sample_ddim(
    model: Denoiser,
    x: Tensor,
    ts: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    denoise: bool = True,
    cond=None,
) -> Tensor:
    """Deterministic DDIM along ``ts`` (``generator`` is accepted for a uniform signature)."""
    return sample_steps(model, x, ts, _ddim_step, generator=generator, callback=callback, progress=progress,
                        denoise=denoise, cond=cond, desc="ddim")


def sample_euler_maruyama(
    model: Denoiser,
    x: Tensor,
    ts: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    denoise: bool = True,
    cond=None,
) -> Tensor:
    """Euler-Maruyama on the reverse-time SDE along ``ts``."""
    return sample_steps(model, x, ts, _em_step, generator=generator, callback=callback, progress=progress,
                        denoise=denoise, cond=cond, desc="euler-maruyama")


def langevin_correct(
    model: Denoiser, x: Tensor, t: Tensor, s: Tensor, *, snr: float, steps: int, generator=None, cond=None
) -> Tensor:
    """Langevin corrector at time ``t`` with Song et al.'s step size ``eps = 2 a (snr |z| / |score|)^2``,
    ``a = alpha(t)^2 / alpha(s)^2`` (1 for VE), the norms averaged over the batch as in their code (a
    per-sample ratio explodes for samples whose score is near zero)."""
    proc, space = model.process, model.space
    tb = model.batch_time(t, x)
    a_t, _ = proc.marginal(t)
    a_s, _ = proc.marginal(s)
    a = (a_t / a_s) ** 2
    for _ in range(steps):
        grad = model.score(x, tb, cond)
        z = space.randn_like(x, generator)
        g_norm = torch.sqrt(space.sum(grad**2)).mean()
        z_norm = torch.sqrt(space.sum(z**2)).mean()
        step = 2 * a * (snr * z_norm / g_norm.clamp(min=1e-12)) ** 2
        x = x + step * grad + torch.sqrt(2 * step) * z
    return x


def check_pc_options(snr: float, corrector_steps: int, predictor: str) -> None:
    """The predictor-corrector's value checks (one place: :func:`sample_pc` and config validation call it)."""
    if predictor not in PREDICTORS:
        raise ValueError(f"unknown predictor {predictor!r}; choose one of {sorted(PREDICTORS)}")
    if snr < 0 or corrector_steps < 0:
        raise ValueError(f"need snr >= 0 and corrector_steps >= 0, got {snr}, {corrector_steps}")


def sample_pc(
    model: Denoiser,
    x: Tensor,
    ts: Tensor,
    *,
    snr: float = 0.16,
    corrector_steps: int = 1,
    predictor: str = "euler_maruyama",
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    denoise: bool = True,
    cond=None,
) -> Tensor:
    """Predictor-corrector: at each grid time, ``corrector_steps`` Langevin steps, then one predictor step
    (``euler_maruyama``, ``ancestral``, ``ddim`` or ``none`` for corrector-only annealed Langevin)."""
    check_pc_options(snr, corrector_steps, predictor)
    predict = PREDICTORS[predictor]

    def step(model, x, t, s, generator, cond):
        x = langevin_correct(model, x, t, s, snr=snr, steps=corrector_steps, generator=generator, cond=cond)
        return x if predict is None else predict(model, x, t, s, generator, cond)

    return sample_steps(model, x, ts, step, generator=generator, callback=callback, progress=progress,
                        denoise=denoise, cond=cond, desc="predictor-corrector")


def sample_ode(
    model: Denoiser,
    x: Tensor,
    ts: Tensor,
    *,
    method: str = "heun",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    denoise: bool = True,
    cond=None,
) -> Tensor:
    """Probability-flow ODE ``dx/dt = f x - g^2/2 score`` from ``ts[0]`` to ``ts[-1]`` (deterministic;
    ``generator`` is accepted for a uniform signature).  ``method``: euler | heun | rk45."""

    def velocity(y: Tensor, t: Tensor) -> Tensor:
        return model.velocity(y, model.batch_time(t, y), cond)

    sol = integrate_ode(velocity, x, ts, method=method, rtol=rtol, atol=atol, callback=callback, progress=progress)
    return denoise_end(model, sol.x, ts, denoise, cond)


def check_heun_churn_options(s_churn: float, s_noise: float) -> None:
    """EDM's churn checks (one place: :func:`sample_heun_churn` and config validation call it)."""
    if s_churn < 0 or s_noise < 0:
        raise ValueError(f"need s_churn >= 0 and s_noise >= 0, got {s_churn}, {s_noise}")


def sample_heun_churn(
    model: Denoiser,
    x: Tensor,
    ts: Tensor,
    *,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    denoise: bool = True,
    cond=None,
) -> Tensor:
    """EDM's stochastic sampler (Karras et al. 2022, algorithm 2) along ``ts`` for any Gaussian process.

    In the scaled state ``y = x / alpha(t)`` at noise level ``s = sigma / alpha`` the probability-flow ODE is
    ``dy / ds = (y - D(y; s)) / s`` with ``D`` the model's ``x0``.  Each step from level ``s_i`` to ``s_{i+1}``:
    if ``s_tmin <= s_i <= s_tmax``, raise the level to ``s_hat = s_i (1 + gamma)``, ``gamma = min(s_churn / N,
    sqrt(2) - 1)`` (``N`` steps), adding ``sqrt(s_hat^2 - s_i^2) s_noise`` fresh noise (capped at the process's
    level at ``t = 1``); then an Euler step to ``s_{i+1}`` and Heun's correction.  Two model evaluations per step
    (NFE ``2 N``).  ``s_churn = 0``: EDM's deterministic Heun sampler.  Not for a flow path (no noise levels)."""
    check_heun_churn_options(s_churn, s_noise)
    proc, space = model.process, model.space
    n = len(ts) - 1
    gamma_max = min(s_churn / n, math.sqrt(2) - 1) if n > 0 else 0.0
    top = float(proc.noise_level(torch.tensor(1.0, dtype=torch.float64)))

    def denoised(y: Tensor, t: Tensor) -> Tensor:  # D(y; s(t)) through the model at time t
        alpha, _ = proc.marginal(t)
        return model.x0(alpha * y, model.batch_time(t, y), cond)

    for i in step_bar(ts, progress, "heun-churn"):
        t, t_next = ts[i], ts[i + 1]
        a_t, sig_t = proc.marginal(t)
        level, level_next = sig_t / a_t, proc.noise_level(t_next)
        y = x / a_t
        gamma = gamma_max if s_tmin <= float(level) <= s_tmax else 0.0
        if gamma > 0:
            level_hat = torch.clamp(level * (1 + gamma), max=top)
            t_hat = proc.time_at(level_hat).to(ts.dtype)
            y = y + torch.sqrt((level_hat**2 - level**2).clamp(min=0)) * s_noise * space.randn_like(y, generator)
        else:
            level_hat, t_hat = level, t
        d = (y - denoised(y, t_hat)) / level_hat
        y_next = y + (level_next - level_hat) * d
        d_next = (y_next - denoised(y_next, t_next)) / level_next
        y_next = y + (level_next - level_hat) * 0.5 * (d + d_next)
        x = proc.marginal(t_next).alpha * y_next
        if callback is not None:
            callback({"i": i, "t": t_next, "x": x})
    return denoise_end(model, x, ts, denoise, cond)


PREDICTORS = {"euler_maruyama": _em_step, "ancestral": _ancestral_step, "ddim": _ddim_step, "none": None}

#: the probability-flow ODE samplers (the deterministic ones a flow model or a likelihood uses)
ODE_SAMPLERS = ("ode_euler", "ode_heun", "ode_rk45")


def __getattr__(name: str):
    # SAMPLERS and get_sampler live in moldiff.diffusion.registry, which imports this module (and DPS, RePaint and
    # the mixed flow); the lazy import keeps ``from moldiff.diffusion.samplers import SAMPLERS`` working
    if name in ("SAMPLERS", "get_sampler"):
        import warnings

        from . import registry  # lazy: a real cycle (the registry imports this module); a deprecation shim

        warnings.warn(f"moldiff.diffusion.samplers.{name} moved to moldiff.diffusion.registry.{name} (also "
                      f"moldiff.diffusion.{name})", DeprecationWarning, stacklevel=2)
        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
