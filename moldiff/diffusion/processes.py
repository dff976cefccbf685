"""Gaussian noise processes: VP, sub-VP and VE score-SDEs, and the discrete DDPM schedules.

Every process is a linear SDE ``dx = f(t) x dt + g(t) dw`` on ``t in [t_min, 1]`` whose marginal is

    x_t = alpha(t) x_0 + sigma(t) eps,    eps ~ N(0, I) in the state's space.

That is all samplers, losses and likelihoods need: :meth:`Process.marginal`, :meth:`Process.f`,
:meth:`Process.g2`, the prior and its log-density.  Time arguments are tensors of any shape; results
have the same shape.

Flow matching (Lipman et al. 2023; Tong et al. 2023) uses the same convention -- ``t = 0`` is the data,
``t = 1`` the source (prior) -- through :class:`FlowPath`: ``x_t = (1 - t) x_0 + t x_1 + s(t) eps`` with a
constant (I-CFM) or Brownian-bridge ``s(t) = sigma sqrt(t (1 - t))`` (SB-CFM) noise.  With a Gaussian source
and independent pairs it is a linear Gaussian process like the others, so the shared ODE samplers and the
likelihood serve flow-matching models unchanged.

Discrete DDPM schedules (``linear``, ``cosine``, EDM's ``polynomial_2``) are VP processes whose
``alpha(t)^2`` is a table over ``T + 1`` levels at ``t = i / T``; between levels the log-SNR is
interpolated linearly, so the continuous-time samplers work on them too, and on the grid ``i / T`` they
are exactly the discrete chain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from .spaces import EuclideanSpace, Space

__all__ = [
    "Process",
    "Marginal",
    "MarginalDerivative",
    "Perturbed",
    "PathSample",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "DiscreteVP",
    "FlowPath",
    "ddpm_alphas_cumprod",
    "time_grid",
    "SPACINGS",
    "PROCESS_KINDS",
    "FLOW_NOISE",
    "build_process",
]


class Marginal(NamedTuple):
    """``x_t = alpha x_0 + sigma eps`` (unpacks as ``alpha, sigma = process.marginal(t)``)."""

    alpha: Tensor
    sigma: Tensor


class MarginalDerivative(NamedTuple):
    """``(d alpha / dt, d sigma / dt)``."""

    dalpha: Tensor
    dsigma: Tensor


class Perturbed(NamedTuple):
    """A draw ``x_t`` of ``q(x_t | x_0)`` and the noise ``eps`` that made it."""

    x_t: Tensor
    eps: Tensor


class PathSample(NamedTuple):
    """A point ``x_t`` on a flow path and the conditional velocity ``u_t`` there."""

    x_t: Tensor
    u_t: Tensor


class Process:
    """Base class: a linear Gaussian diffusion on ``[t_min, 1]`` (see module docstring)."""

    t_min: float = 1e-3
    #: number of discrete levels (0 for continuous-time processes)
    num_levels: int = 0

    # -- to implement -------------------------------------------------------------------------------
    def marginal(self, t: Tensor) -> Marginal:
        """``(alpha(t), sigma(t))`` of ``x_t = alpha x_0 + sigma eps``."""
        raise NotImplementedError

    def f(self, t: Tensor) -> Tensor:
        """Linear drift coefficient: ``drift(x, t) = f(t) x``."""
        raise NotImplementedError

    def g2(self, t: Tensor) -> Tensor:
        """Squared diffusion coefficient ``g(t)^2``."""
        raise NotImplementedError

    @property
    def prior_std(self) -> float:
        """Standard deviation of the prior ``N(0, prior_std^2 I)`` at ``t = 1``."""
        return 1.0

    # -- derived --------------------------------------------------------------------------------------
    def marginal_derivative(self, t: Tensor) -> MarginalDerivative:
        """``(d alpha / dt, d sigma / dt)``, from ``d alpha = f alpha dt`` and ``d sigma^2 = (2 f sigma^2 + g^2) dt``."""
        alpha, sigma = self.marginal(t)
        f = self.f(t)
        return MarginalDerivative(f * alpha, (2 * f * sigma**2 + self.g2(t)) / (2 * sigma))

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio ``alpha^2 / sigma^2``."""
        alpha, sigma = self.marginal(t)
        return alpha**2 / sigma**2

    def log_snr(self, t: Tensor) -> Tensor:
        alpha, sigma = self.marginal(t)
        return 2 * (torch.log(alpha) - torch.log(sigma))

    def noise_level(self, t: Tensor) -> Tensor:
        """EDM's noise level ``sigma(t) / alpha(t)``: ``x_t / alpha = x_0 + (sigma / alpha) eps`` (Karras et al.
        2022 write every process this way); increasing in ``t``."""
        alpha, sigma = self.marginal(t)
        return sigma / alpha

    def transition(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """The forward transition ``q(x_t | x_s) = N(ratio x_s, var I)`` for ``s < t``: ``(ratio, var)`` with
        ``ratio = alpha_t / alpha_s`` and ``var = sigma_t^2 - ratio^2 sigma_s^2`` (not clamped: rounding can make it
        slightly negative near ``s = t``)."""
        a_t, s_t = self.marginal(t)
        a_s, s_s = self.marginal(s)
        ratio = a_t / a_s
        return ratio, s_t**2 - ratio**2 * s_s**2

    def time_at(self, level: Tensor) -> Tensor:
        """The time ``t in [t_min, 1]`` whose :meth:`noise_level` is ``level`` (any shape; clamped to the
        process's range), by bisection in float64 -- exact to about 1e-12 in ``t`` for every process here."""
        level = torch.as_tensor(level)
        target = level.to(torch.float64)
        lo = torch.full_like(target, float(self.t_min))
        hi = torch.ones_like(target)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            below = self.noise_level(mid) < target
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return (0.5 * (lo + hi)).to(level.dtype if level.is_floating_point() else torch.float32)

    def perturb(
        self, x0: Tensor, t: Tensor, space: Space | None = None, generator: torch.Generator | None = None
    ) -> Perturbed:
        """Draw ``x_t ~ q(x_t | x_0)``; returns ``(x_t, eps)``.  ``t`` is per sample, ``[B]``."""
        space = space or EuclideanSpace()
        eps = space.randn_like(x0, generator)
        alpha, sigma = self.marginal(t)
        return Perturbed(space.expand(alpha, x0) * x0 + space.expand(sigma, x0) * eps, eps)

    def prior_sample(
        self, like: Tensor, space: Space | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Sample the prior with the shape (and space) of ``like``."""
        space = space or EuclideanSpace()
        return self.prior_std * space.randn_like(like, generator)

    def prior_logp(self, x: Tensor, space: Space | None = None) -> Tensor:
        """Log-density of the prior, per sample ``[B]``, w.r.t. Lebesgue measure on the space
        (for zero-CoM point clouds: the ``3 (n - 1)``-dimensional subspace)."""
        space = space or EuclideanSpace()
        s2 = self.prior_std**2
        dof = space.dof(x)
        return -0.5 * space.sum(x**2) / s2 - 0.5 * dof * math.log(2 * math.pi * s2)


# --------------------------------------------------------------------------------------------------
# continuous-time SDEs (Song et al. 2021)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VPSDE(Process):
    """Variance-preserving SDE with linear ``beta(t) = beta_min + t (beta_max - beta_min)``."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: float = 1e-3

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integral_beta(self, t: Tensor) -> Tensor:
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def marginal(self, t: Tensor) -> Marginal:
        B = self.integral_beta(t)
        return Marginal(torch.exp(-0.5 * B), torch.sqrt(-torch.expm1(-B)))

    def f(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t)

    def g2(self, t: Tensor) -> Tensor:
        return self.beta(t)


@dataclass(frozen=True)
class SubVPSDE(VPSDE):
    """Sub-VP SDE: VP's mean, variance ``(1 - e^{-B(t)})^2`` and ``g^2 = beta (1 - e^{-2 B(t)})``."""

    def marginal(self, t: Tensor) -> Marginal:
        B = self.integral_beta(t)
        return Marginal(torch.exp(-0.5 * B), -torch.expm1(-B))

    def g2(self, t: Tensor) -> Tensor:
        return self.beta(t) * -torch.expm1(-2 * self.integral_beta(t))


@dataclass(frozen=True)
class VESDE(Process):
    """Variance-exploding SDE, ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``, ``alpha = 1``.

    As in Song et al., the marginal std is ``sigma(t)`` itself (data are taken as already perturbed at
    ``sigma_min``); the prior is ``N(0, sigma_max^2 I)``.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    t_min: float = 1e-5

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def marginal(self, t: Tensor) -> Marginal:
        return Marginal(torch.ones_like(t), self.sigma(t))

    def f(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def g2(self, t: Tensor) -> Tensor:
        return 2 * self.sigma(t) ** 2 * math.log(self.sigma_max / self.sigma_min)

    @property
    def prior_std(self) -> float:
        return self.sigma_max


# --------------------------------------------------------------------------------------------------
# discrete DDPM schedules
# --------------------------------------------------------------------------------------------------
def _clip_noise_schedule(alphas2: np.ndarray, clip_value: float = 0.001) -> np.ndarray:
    """EDM: clip ``alpha_t^2 / alpha_{t-1}^2`` from below for stable sampling."""
    alphas2 = np.concatenate([np.ones(1), alphas2])
    step = np.clip(alphas2[1:] / alphas2[:-1], clip_value, 1.0)
    return np.cumprod(step)


def ddpm_alphas_cumprod(schedule: str, num_steps: int, precision: float = 1e-5) -> np.ndarray:
    """``alpha_bar`` at levels ``0..T`` (float64, length ``T + 1``).

    * ``linear``: Ho et al. (2020), ``beta`` from 1e-4 to 0.02 (level 0 is the data, ``alpha_bar = 1``).
    * ``cosine``: Nichol & Dhariwal (2021), ``s = 0.008``, ``beta`` clipped at 0.999 (level 0 = data).
    * ``polynomial_2``: Hoogeboom et al. (2022, EDM), ``alpha^2 = (1 - (x / (T+1))^2)^2`` on
      ``x = linspace(0, T+1, T+1)``, step ratios clipped at 0.001, then squeezed into
      ``[precision, 1 - precision]`` so level 0 is slightly noisy.
    """
    T = int(num_steps)
    if T < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if schedule == "linear":
        betas = np.clip(np.linspace(1e-4 * 1000 / T, 0.02 * 1000 / T, T, dtype=np.float64), 0.0, 0.999)
        return np.concatenate([[1.0], np.cumprod(1.0 - betas)])
    if schedule == "cosine":
        s = 0.008
        x = np.linspace(0, T, T + 1, dtype=np.float64)
        fx = np.cos((x / T + s) / (1 + s) * math.pi / 2) ** 2
        abar = fx / fx[0]
        betas = np.clip(1 - abar[1:] / abar[:-1], 0.0, 0.999)
        return np.concatenate([[1.0], np.cumprod(1.0 - betas)])
    if schedule == "polynomial_2":
        steps = T + 1
        x = np.linspace(0, steps, steps, dtype=np.float64)
        alphas2 = (1 - (x / steps) ** 2) ** 2
        alphas2 = _clip_noise_schedule(alphas2, clip_value=0.001)
        return (1 - 2 * precision) * alphas2 + precision
    raise ValueError(f"unknown DDPM schedule {schedule!r}; choose linear, cosine or polynomial_2")


@dataclass(frozen=True)
class DiscreteVP(Process):
    """A VP process given by a DDPM table ``alpha_bar[0..T]`` at ``t = i / T``.

    ``t_min`` is the first noisy level: ``1 / T`` for ``linear`` / ``cosine`` (level 0 is the clean data),
    ``0`` for ``polynomial_2`` (level 0 already carries ``precision`` noise, as in EDM).
    """

    schedule: str = "polynomial_2"
    num_steps: int = 1000
    precision: float = 1e-5
    _gamma: Tensor = field(init=False, repr=False, compare=False)
    _tables: dict = field(init=False, repr=False, compare=False, default_factory=dict)

    def _table(self, device, dtype) -> Tensor:
        """The ``-log SNR`` table on a device, copied once (no host-to-device copy per training step)."""
        key = (str(device), dtype)
        if key not in self._tables:
            self._tables[key] = self._gamma.to(device=device, dtype=dtype)
        return self._tables[key]

    def __post_init__(self) -> None:
        abar = ddpm_alphas_cumprod(self.schedule, self.num_steps, self.precision)
        with np.errstate(divide="ignore"):
            gamma = np.log1p(-abar) - np.log(abar)  # -log SNR, -inf at a clean level 0
        object.__setattr__(self, "_gamma", torch.from_numpy(gamma))

    @property
    def num_levels(self) -> int:  # type: ignore[override]
        return self.num_steps

    @property
    def t_min(self) -> float:  # type: ignore[override]
        return 0.0 if self.schedule == "polynomial_2" else 1.0 / self.num_steps

    def alphas_cumprod(self) -> Tensor:
        """The table ``alpha_bar[0..T]`` (float64)."""
        return torch.sigmoid(-self._gamma)

    def gamma(self, t: Tensor) -> Tensor:
        """``-log SNR(t)``, linear between levels; ``t`` is clamped to ``[t_min, 1]``."""
        T = self.num_steps
        g = self._table(t.device, t.dtype if t.is_floating_point() else torch.float64)
        u = t.clamp(self.t_min, 1.0) * T
        i0 = u.floor().long().clamp(max=T - 1)
        w = u - i0.to(u.dtype)
        lo, hi = g[i0], g[(i0 + 1).clamp(max=T)]
        # at an exact level pick the table value (avoids -inf * 0 at a clean level 0)
        return torch.where(w == 0, lo, lo + w * (hi - lo))

    def dgamma(self, t: Tensor) -> Tensor:
        T = self.num_steps
        g = self._table(t.device, t.dtype)
        u = t.clamp(self.t_min, 1.0) * T
        i0 = u.floor().long().clamp(min=round(self.t_min * T), max=T - 1)
        return (g[i0 + 1] - g[i0]) * T

    def marginal(self, t: Tensor) -> Marginal:
        gamma = self.gamma(t)
        return Marginal(torch.sqrt(torch.sigmoid(-gamma)), torch.sqrt(torch.sigmoid(gamma)))

    def f(self, t: Tensor) -> Tensor:
        return -0.5 * self.g2(t)

    def g2(self, t: Tensor) -> Tensor:
        # beta(t) = -d log alpha^2 / dt = sigma^2 * d gamma / dt
        return torch.sigmoid(self.gamma(t)) * self.dgamma(t)


# --------------------------------------------------------------------------------------------------
# flow-matching paths
# --------------------------------------------------------------------------------------------------
FLOW_NOISE = ("constant", "bridge")


@dataclass(frozen=True)
class FlowPath(Process):
    """The conditional flow-matching path between a data point ``x_0`` (``t = 0``) and a source point ``x_1``
    (``t = 1``, drawn from ``N(0, prior_std^2 I)`` or any other source):

        x_t = (1 - t) x_0 + t x_1 + s(t) eps,    u_t = x_1 - x_0 + s'(t) eps,

    ``s(t) = sigma`` (``noise="constant"``: I-CFM and OT-CFM, Tong et al. 2023) or
    ``s(t) = sigma sqrt(t (1 - t))`` (``noise="bridge"``: the Brownian bridge of SB-CFM, whose conditional
    variance is ``sigma^2 t (1 - t)``).  ``u_t`` is the conditional velocity regressed by
    :func:`~moldiff.diffusion.losses.flow_matching_loss` (direction of increasing ``t``, data to source).

    With constant ``sigma > 0`` the path's ``t = 1`` marginal is the source blurred by ``sigma``, while sampling
    starts from the source itself (as in torchcfm); keep ``sigma`` small against the source's scale.

    As a :class:`Process` it describes the *marginal* path for a Gaussian source and independent pairs:
    ``alpha = 1 - t``, ``sigma_t^2 = prior_std^2 t^2 + s(t)^2``; that is what the ODE samplers and the
    likelihood use (a model that predicts the velocity needs only ``t_min`` and the prior from it).
    """

    sigma: float = 0.0
    noise: str = "constant"
    prior_std: float = 1.0  # type: ignore[assignment]  (a field here, a property on Process)
    t_min: float = 0.0
    #: times are clamped to ``[eps_t, 1 - eps_t]`` where the bridge's ``s'(t)`` is singular
    eps_t: float = 1e-4

    def noise_level(self, t: Tensor) -> Tensor:
        """Not defined: ``alpha(1) = 0`` makes the level unbounded at the source end, so EDM's noise-level tools
        (the Karras grid, log-normal training times, the Heun-with-churn sampler) do not apply to a flow path."""
        raise ValueError("a flow path has no noise level sigma / alpha (alpha = 0 at t = 1): EDM's noise-level "
                         "tools (Karras grid, log-normal times, heun_churn) are for diffusion processes")

    def __post_init__(self) -> None:
        if self.noise not in FLOW_NOISE:
            raise ValueError(f"unknown flow noise {self.noise!r}; choose one of {FLOW_NOISE}")
        if self.sigma < 0 or self.prior_std <= 0:
            raise ValueError(f"FlowPath needs sigma >= 0 and prior_std > 0, got {self.sigma}, {self.prior_std}")

    def noise_std(self, t: Tensor) -> Tensor:
        """``s(t)``: the conditional path's standard deviation."""
        if self.noise == "constant":
            return torch.full_like(t, self.sigma)
        return self.sigma * torch.sqrt((t * (1 - t)).clamp(min=0))

    def noise_std_derivative(self, t: Tensor) -> Tensor:
        """``s'(t)`` (0 for constant noise; ``sigma (1 - 2t) / (2 sqrt(t (1 - t)))`` for the bridge)."""
        if self.noise == "constant":
            return torch.zeros_like(t)
        t = t.clamp(self.eps_t, 1 - self.eps_t)
        return self.sigma * (1 - 2 * t) / (2 * torch.sqrt(t * (1 - t)))

    def conditional(
        self, x0: Tensor, x1: Tensor, t: Tensor, space: Space | None = None, generator: torch.Generator | None = None
    ) -> PathSample:
        """Draw ``x_t`` on the path between paired ``x0`` (data) and ``x1`` (source) and return
        ``(x_t, u_t)``; ``t`` is per sample ``[B]``."""
        space = space or EuclideanSpace()
        eps = space.randn_like(x0, generator)
        tt = space.expand(t, x0).to(x0.dtype)
        s = space.expand(self.noise_std(t), x0).to(x0.dtype)
        ds = space.expand(self.noise_std_derivative(t), x0).to(x0.dtype)
        x_t = (1 - tt) * x0 + tt * x1 + s * eps
        return PathSample(x_t, x1 - x0 + ds * eps)

    # -- the marginal Gaussian process (Gaussian source, independent pairs) -------------------------
    def marginal(self, t: Tensor) -> Marginal:
        return Marginal(1 - t, torch.sqrt((self.prior_std * t) ** 2 + self.noise_std(t) ** 2))

    def marginal_derivative(self, t: Tensor) -> MarginalDerivative:
        """Analytic: ``alpha' = -1``, ``sigma' = (prior_std^2 t + s s') / sigma_t`` (``prior_std`` at ``t = 0``
        when ``sigma = 0``)."""
        if self.noise == "bridge":
            t = t.clamp(self.eps_t, 1 - self.eps_t)
        _, sig = self.marginal(t)
        num = self.prior_std**2 * t + self.noise_std(t) * self.noise_std_derivative(t)
        dsig = torch.where(sig > 0, num / sig.clamp(min=1e-30), torch.full_like(t, self.prior_std))
        return MarginalDerivative(-torch.ones_like(t), dsig)

    def f(self, t: Tensor) -> Tensor:
        return -1 / (1 - t).clamp(min=self.eps_t)

    def g2(self, t: Tensor) -> Tensor:
        # d sigma^2 / dt - 2 f sigma^2
        _, sigma = self.marginal(t)
        s, ds = self.noise_std(t), self.noise_std_derivative(t)
        dsig2 = 2 * self.prior_std**2 * t + 2 * s * ds
        return dsig2 - 2 * self.f(t) * sigma**2


# --------------------------------------------------------------------------------------------------
SPACINGS = ("uniform", "karras")


def time_grid(process: Process, steps: int, *, t_min: float | None = None, spacing: str = "uniform", rho: float = 7.0,
              device=None, dtype=torch.float32) -> Tensor:
    """Decreasing sampling times ``[steps + 1]`` from 1 to ``t_min``.

    ``spacing="uniform"``: continuous processes get a uniform grid in ``t``; discrete ones get levels
    ``round(linspace(T, first, steps+1))/T``, i.e. every level when ``steps == T`` (the exact DDPM chain) and
    evenly skipped levels otherwise.  ``spacing="karras"``: Karras et al.'s (2022, eq. 5) grid, uniform in
    ``level^(1/rho)`` between the noise levels (:meth:`Process.noise_level`) at 1 and ``t_min``, which puts
    most steps at low noise; mapped back to times with :meth:`Process.time_at` (any Gaussian process, discrete
    schedules through their interpolation).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if spacing not in SPACINGS:
        raise ValueError(f"unknown time spacing {spacing!r}; choose one of {SPACINGS}")
    lo = process.t_min if t_min is None else t_min
    if spacing == "karras":
        if rho <= 0:
            raise ValueError(f"rho must be > 0, got {rho}")
        ends = process.noise_level(torch.tensor([1.0, lo], dtype=torch.float64))
        hi_r, lo_r = ends[0] ** (1 / rho), ends[1] ** (1 / rho)
        levels = (hi_r + torch.linspace(0, 1, steps + 1, dtype=torch.float64) * (lo_r - hi_r)) ** rho
        ts = process.time_at(levels)
        ts[0], ts[-1] = 1.0, lo  # exact ends
        return ts.to(dtype=dtype, device=device)
    if process.num_levels:
        T = process.num_levels
        first = round(lo * T)
        if steps > T - first:
            raise ValueError(f"steps={steps} exceeds the {T - first} levels of this discrete schedule")
        levels = np.unique(np.round(np.linspace(T, first, steps + 1)).astype(np.int64))[::-1].copy()
        return torch.as_tensor(levels / T, dtype=dtype, device=device)
    return torch.linspace(1.0, lo, steps + 1, dtype=dtype, device=device)


PROCESS_KINDS = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE, "ddpm": DiscreteVP, "flow": FlowPath}


def build_process(kind: str, **kwargs) -> Process:
    """Process from a name: ``vp``, ``subvp``, ``ve``, ``ddpm`` or ``flow`` (kwargs: the dataclass fields)."""
    if kind not in PROCESS_KINDS:
        raise ValueError(f"unknown process kind {kind!r}; choose one of {sorted(PROCESS_KINDS)}")
    return PROCESS_KINDS[kind](**kwargs)
