"""2D incompressible Navier-Stokes in vorticity form, pseudo-spectral, for Kolmogorov flow.

Equations (periodic square ``[0, 2 pi)^2``)::

    d(omega)/dt + u . grad(omega) = nu lap(omega) - alpha omega + f,
    (u, v) = (d psi/dy, -d psi/dx),   lap(psi) = -omega,   f = -A k_f cos(k_f y)

``f`` is the curl of the Kolmogorov body force ``F_x = A sin(k_f y)`` (jax-cfd's ``kolmogorov_forcing``
with ``linear_coefficient = -alpha``, the setup of Rozet & Louppe's Score-based Data Assimilation).
Units are nondimensional: lengths such that the domain is ``2 pi``, time such that the forcing amplitude
is ``A = 1``, hence ``Re = 1 / nu`` (``nu = 1e-3``: Re 1000).

Grid: ``omega[..., j, i]`` is the vorticity at ``y = 2 pi j / n``, ``x = 2 pi i / n`` (index order
``[y, x]``, any leading batch shape).  Spectral arrays use the ``torch.fft.rfft2`` layout ``[..., n (k_y),
n // 2 + 1 (k_x)]``; the Nyquist wavenumbers are zeroed in odd derivatives.

Dealiasing: 2/3 rule, brick-wall per axis.  The advection term is computed from the vorticity restricted
to ``|k_x|, |k_y| <= (n - 1) // 3`` and the product is truncated to the same modes, which makes it the exact
Galerkin projection (energy and enstrophy are conserved by the semi-discrete inviscid system).

Time stepping: integrating-factor RK4 (Lawson's IF-RK4, 4th order, 4 nonlinear evaluations per step).
The linear part ``L = -(nu |k|^2 + alpha)`` is integrated exactly through ``exp(L h)``, so viscosity and
drag impose no step restriction (only advection's CFL condition does), and the constant forcing is exact
too: we step ``theta = omega - omega_s`` where ``omega_s = -f / L`` is the laminar steady state.  Hence
Taylor-Green vortices and the laminar Kolmogorov profile (whose advection vanishes) are integrated to
round-off.  The time step is chosen from ``max_cfl * dx / max|u|`` (capped at ``max_dt``) at every step.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor
from moldiff.progress import progress_bar

__all__ = [
    "CFLError",
    "KolmogorovFlow",
    "velocity_from_vorticity",
    "vorticity_from_velocity",
    "taylor_green",
    "taylor_green_decay",
    "energy",
    "enstrophy",
    "energy_spectrum",
]


_CHUNK_POINTS = 16 * 64 * 64  # grid points per nonlinear-term chunk on CPU (see KolmogorovFlow._advection_hat)


class CFLError(FloatingPointError):
    """An explicit time step exceeds the Courant number limit ``max_cfl``."""


class _Grid(NamedTuple):
    kx: Tensor  # [1, m] integer wavenumbers (m = n // 2 + 1), real dtype
    ky: Tensor  # [n, 1]
    k2: Tensor  # [n, m] |k|^2
    vel: Tensor  # [2, n, m] complex: omega_hat -> (u_hat, v_hat)
    curl: Tensor  # [2, n, m] complex: (d/dx, d/dy)
    mask: Tensor  # [n, m] 2/3-rule brick-wall filter (0/1, real dtype)
    nl: Tensor  # [4, n, m] complex: masked omega_hat -> (u, v, omega_x, omega_y) hats


@functools.lru_cache(maxsize=32)
def _grid(n: int, device: torch.device, dtype: torch.dtype) -> _Grid:
    """Spectral operators for an ``n x n`` grid (cached per ``n``, device and real dtype)."""
    if n < 4 or n % 2:
        raise ValueError(f"the grid size must be even and >= 4, got {n}")
    half = n // 2
    ky = torch.cat([torch.arange(half), torch.arange(-half, 0)]).to(device, dtype)[:, None]
    kx = torch.arange(half + 1).to(device, dtype)[None, :]
    k2 = kx**2 + ky**2
    inv_k2 = torch.where(k2 > 0, 1.0 / k2.clamp_min(1.0), torch.zeros_like(k2))
    dx = 1j * torch.where(kx == half, 0.0, kx)  # odd derivatives drop the Nyquist modes
    dy = 1j * torch.where(ky == -half, 0.0, ky)
    dx, dy = torch.broadcast_tensors(dx, dy)
    cut = (n - 1) // 3
    mask = ((kx.abs() <= cut) & (ky.abs() <= cut)).to(dtype)
    vel = torch.stack([dy * inv_k2, -dx * inv_k2])
    nl = torch.cat([vel, torch.stack([dx, dy])]) * mask
    return _Grid(kx, ky, k2, vel, torch.stack([dx, dy]), mask, nl)


def _grid_of(x: Tensor) -> _Grid:
    if not x.is_floating_point() or x.dim() < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"expected real fields [..., n, n], got {tuple(x.shape)} {x.dtype}")
    return _grid(x.shape[-1], x.device, x.dtype)


def velocity_from_vorticity(omega: Tensor) -> tuple[Tensor, Tensor]:
    """``(u, v)``, each ``[..., n, n]``, of the vorticity ``[..., n, n]`` (its mean is ignored)."""
    n = omega.shape[-1]
    uv = torch.fft.irfft2(torch.fft.rfft2(omega).unsqueeze(-3) * _grid_of(omega).vel, s=(n, n))
    return uv[..., 0, :, :], uv[..., 1, :, :]


def vorticity_from_velocity(u: Tensor, v: Tensor) -> Tensor:
    """``omega = dv/dx - du/dy`` (spectral derivatives), ``[..., n, n]``."""
    g, n = _grid_of(u), u.shape[-1]
    return torch.fft.irfft2(torch.fft.rfft2(v) * g.curl[0] - torch.fft.rfft2(u) * g.curl[1], s=(n, n))


def energy(omega: Tensor) -> Tensor:
    """Kinetic energy per unit area ``1/2 <u^2 + v^2>``, shape ``[...]``."""
    u, v = velocity_from_vorticity(omega)
    return 0.5 * (u.square() + v.square()).mean((-2, -1))


def enstrophy(omega: Tensor) -> Tensor:
    """Enstrophy per unit area ``1/2 <omega^2>``, shape ``[...]``."""
    return 0.5 * omega.square().mean((-2, -1))


def energy_spectrum(omega: Tensor) -> tuple[Tensor, Tensor]:
    """Isotropic energy spectrum: ``(k [K], E [..., K])`` summed over shells ``round(|k|) = k``.

    ``E.sum(-1) == energy(omega)`` (Parseval); ``K = round(sqrt(2) n / 2) + 1``.
    """
    g, n = _grid_of(omega), omega.shape[-1]
    u, v = velocity_from_vorticity(omega)
    weight = torch.full_like(g.kx, 2.0)
    weight[..., 0] = weight[..., -1] = 1.0  # rfft: k_x = 0 and Nyquist columns appear once
    dens = 0.5 * weight * (torch.fft.rfft2(u).abs().square() + torch.fft.rfft2(v).abs().square()) / n**4
    shell = g.k2.sqrt().round().long().flatten()
    num = int(shell.max()) + 1
    flat = dens.reshape(-1, shell.numel())
    spec = torch.zeros(flat.shape[0], num, dtype=dens.dtype, device=dens.device).index_add_(1, shell, flat)
    return torch.arange(num, dtype=omega.dtype, device=omega.device), spec.reshape(*omega.shape[:-2], num)


def taylor_green(n: int, k: int = 1, amplitude: float = 1.0, dtype: torch.dtype = torch.float64) -> Tensor:
    """Taylor-Green vortex ``omega = 2 k A sin(k x) sin(k y)``, ``[n, n]``.

    Velocity ``(A sin(kx) cos(ky), -A cos(kx) sin(ky))`` (max speed ``A``); advection vanishes, so under
    the unforced equations it decays as :func:`taylor_green_decay`.
    """
    x = torch.arange(n, dtype=dtype) * (2 * math.pi / n)
    return 2 * k * amplitude * torch.sin(k * x)[:, None] * torch.sin(k * x)[None, :]


def taylor_green_decay(t: float, k: int, viscosity: float, drag: float) -> float:
    """Amplitude factor ``exp(-(2 nu k^2 + alpha) t)`` of a Taylor-Green vortex after time ``t``."""
    return math.exp(-(2 * viscosity * k**2 + drag) * t)


def _log_normal(k: Tensor, mode: float, variance: float = 0.25) -> Tensor:
    """jax-cfd's unscaled log-normal density peaked at ``mode`` (zero at ``k = 0``)."""
    logk = k.clamp_min(1e-30).log()
    return torch.where(k > 0, torch.exp(-((math.log(mode) + variance - logk) ** 2) / (2 * variance) - logk), 0.0)


@dataclass(frozen=True)
class KolmogorovFlow:
    """Forced 2D Navier-Stokes (Kolmogorov flow) on an ``n x n`` periodic grid; see the module docstring.

    Fields are vorticities ``[..., n, n]`` (``[y, x]`` index order), any float dtype and device.
    ``max|u|`` is the largest speed ``sqrt(u^2 + v^2)`` over the grid (and the batch) of the resolved
    (dealiased) field, and the Courant number is ``max|u| dt / dx`` with ``dx = 2 pi / n``.
    """

    n: int = 64
    viscosity: float = 1e-3
    drag: float = 0.1
    forcing_wavenumber: int = 4  # 0 disables forcing
    forcing_amplitude: float = 1.0  # F_x = amplitude * sin(k_f y)
    max_cfl: float = 0.5
    max_dt: float = 0.05

    @property
    def dx(self) -> float:
        return 2 * math.pi / self.n

    def forcing(self, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> Tensor:
        """Vorticity forcing ``f = -A k_f cos(k_f y)``, ``[n, n]``."""
        kf, y = self.forcing_wavenumber, torch.arange(self.n, dtype=dtype, device=device) * self.dx
        return (-self.forcing_amplitude * kf * torch.cos(kf * y))[:, None].expand(self.n, self.n).clone()

    @functools.lru_cache(maxsize=16)  # noqa: B019 - frozen, hashable instances; a handful per process
    def _ops(self, device: torch.device, dtype: torch.dtype) -> tuple[_Grid, Tensor, Tensor, Tensor | None]:
        """``(grid, L [n, m], omega_s_hat, f_explicit_hat)``: the exactly integrated affine part ``L w + f``.

        ``omega_s = -f / L`` on modes with ``L != 0``; forcing on modes with ``L = 0`` (no viscosity, no
        drag) stays explicit (``None`` when there is none).
        """
        g = _grid(self.n, device, dtype)
        lin = -(self.viscosity * g.k2 + self.drag)
        f_hat = torch.fft.rfft2(self.forcing(dtype, device)) if self.forcing_wavenumber else torch.zeros_like(g.vel[0])
        steady = torch.where(lin != 0, -f_hat / torch.where(lin != 0, lin, 1.0), 0.0)
        f_exp = torch.where(lin != 0, 0.0, f_hat)
        return g, lin, steady, (f_exp if bool(f_exp.abs().max() > 0) else None)

    def _check(self, omega: Tensor) -> None:
        if omega.dim() < 2 or omega.shape[-2:] != (self.n, self.n) or not omega.is_floating_point():
            raise ValueError(f"expected vorticity [..., {self.n}, {self.n}], got {tuple(omega.shape)} {omega.dtype}")

    def velocity(self, omega: Tensor) -> tuple[Tensor, Tensor]:
        """``(u, v)``, each ``[..., n, n]``."""
        self._check(omega)
        return velocity_from_vorticity(omega)

    def _advection_hat(self, w_hat: Tensor, g: _Grid, speed: bool = False) -> tuple[Tensor, float]:
        """Dealiased ``-(u . grad omega)`` in spectral space and (if ``speed``) ``max|u|`` of the resolved field.

        Large batches go through in chunks of ``_CHUNK_POINTS`` grid points: on CPU the FFTs' working set
        then stays in cache (2.5x faster per field at batch 128 on 64^2); the result does not depend on it.
        """
        flat = w_hat.reshape(-1, *w_hat.shape[-2:])
        size = max(1, _CHUNK_POINTS // self.n**2) if flat.device.type == "cpu" else flat.shape[0]
        outs, speeds = [], []
        for part in flat.split(size):
            u, v, wx, wy = torch.fft.irfft2(part.unsqueeze(-3) * g.nl, s=(self.n, self.n)).unbind(-3)
            if speed:
                speeds.append((u.square() + v.square()).max())
            outs.append(torch.fft.rfft2(u * wx + v * wy) * (-g.mask))
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        umax = torch.stack(speeds).max().sqrt().item() if speed else math.nan
        return out.reshape(w_hat.shape), umax

    def advection(self, omega: Tensor) -> Tensor:
        """The dealiased nonlinear term ``-(u . grad omega)``, ``[..., n, n]`` (only ``|k_i| <= (n-1)//3``)."""
        self._check(omega)
        g = _grid(self.n, omega.device, omega.dtype)
        return torch.fft.irfft2(self._advection_hat(torch.fft.rfft2(omega), g)[0], s=(self.n, self.n))

    def stable_dt(self, omega: Tensor) -> float:
        """``min(max_cfl * dx / max|u|, max_dt)`` with ``max|u|`` taken over the whole batch."""
        self._check(omega)
        g = _grid(self.n, omega.device, omega.dtype)
        uv = torch.fft.irfft2(torch.fft.rfft2(omega).unsqueeze(-3) * g.nl[:2], s=(self.n, self.n))
        umax = uv.square().sum(-3).max().sqrt().item()
        return min(self.max_cfl * self.dx / umax, self.max_dt) if umax > 0 else self.max_dt

    def step(self, omega: Tensor, dt: float) -> Tensor:
        """One IF-RK4 step of size ``dt``; raises :class:`CFLError` if the Courant number exceeds ``max_cfl``."""
        return self.advance(omega, dt, dt)

    def advance(self, omega: Tensor, duration: float, dt: float | None = None) -> Tensor:
        """Integrate ``[..., n, n]`` by ``duration`` time units.

        ``dt=None``: every step takes ``min(stable_dt, max_dt)``, shortened so the steps land exactly on
        ``duration``.  Explicit ``dt``: ``ceil(duration / dt)`` equal steps; :class:`CFLError` if any step
        exceeds the Courant limit.  Non-finite states raise ``FloatingPointError``.
        """
        self._check(omega)
        if duration < 0 or (dt is not None and not dt > 0):
            raise ValueError(f"need duration >= 0 and dt > 0, got duration={duration}, dt={dt}")
        if duration == 0:
            return omega
        g, lin, steady, f_exp = self._ops(omega.device, omega.dtype)

        def rhs(theta: Tensor, speed: bool = False) -> tuple[Tensor, float]:
            out, umax = self._advection_hat(theta + steady, g, speed)
            return (out if f_exp is None else out + f_exp), umax

        theta = torch.fft.rfft2(omega) - steady
        fixed = None if dt is None else max(1, math.ceil(duration / dt - 1e-9))
        t, done = 0.0, 0
        while True:
            a, umax = rhs(theta, speed=True)
            if not math.isfinite(umax):
                raise FloatingPointError(f"Navier-Stokes: non-finite state after t = {t:.4g} of {duration:.4g}")
            if fixed is None:
                h_cfl = min(self.max_cfl * self.dx / umax, self.max_dt) if umax > 0 else self.max_dt
                left = max(1, math.ceil((duration - t) / h_cfl - 1e-9))
                h = (duration - t) / left
            else:
                h, left = duration / fixed, fixed - done
                courant = umax * h / self.dx
                if courant > self.max_cfl:
                    raise CFLError(
                        f"Courant number {courant:.4g} = max|u| {umax:.4g} * dt {h:.4g} / dx {self.dx:.4g} exceeds "
                        f"the limit max_cfl = {self.max_cfl} (largest stable dt {self.max_cfl * self.dx / umax:.4g})"
                    )
            theta = self._if_rk4(theta, a, h, lin, rhs)
            t, done = t + h, done + 1
            if left == 1:
                break
        out = torch.fft.irfft2(theta + steady, s=(self.n, self.n))
        if not torch.isfinite(out).all():
            raise FloatingPointError(f"Navier-Stokes: non-finite state within {duration:.4g} time units")
        return out

    @staticmethod
    def _if_rk4(theta: Tensor, a: Tensor, h: float, lin: Tensor, rhs) -> Tensor:
        """Lawson IF-RK4 for ``theta' = L theta + N(theta)`` given ``a = N(theta)``."""
        e1, e2 = torch.exp(lin * h), torch.exp(lin * (h / 2))
        k1 = h * a
        e2t = e2 * theta
        k2 = h * rhs(e2t + e2 * (0.5 * k1))[0]
        k3 = h * rhs(e2t + 0.5 * k2)[0]
        k4 = h * rhs(e1 * theta + e2 * k3)[0]
        return e1 * theta + (e1 * k1 + 2 * e2 * (k2 + k3) + k4) / 6

    def trajectory(self, omega0: Tensor, num_states: int, interval: float, *, progress: bool = False) -> Tensor:
        """States at ``0, interval, ..., (num_states - 1) interval``: ``[..., n, n] -> [..., num_states, n, n]``."""
        if num_states < 1:
            raise ValueError(f"num_states must be >= 1, got {num_states}")
        out, omega = [omega0], omega0
        for _ in progress_bar(range(num_states - 1), enabled=progress, desc="navier-stokes", leave=False):
            omega = self.advance(omega, interval)
            out.append(omega)
        return torch.stack(out, dim=-3)

    def random_initial(
        self,
        batch: int,
        generator: torch.Generator,
        *,
        peak_wavenumber: float = 4.0,
        max_velocity: float = 3.0,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Random smooth vorticities ``[batch, n, n]`` on ``generator.device``, each with ``max|u| = max_velocity``.

        Like jax-cfd's ``filtered_velocity_field``: white noise filtered in Fourier space so that the
        vorticity amplitude per mode is jax-cfd's log-normal density in ``|k|`` peaked at
        ``peak_wavenumber`` (equivalently: filtered white-noise velocity, projected to zero divergence),
        restricted to the dealiased modes, zero mean.  Computed in float64 and cast to ``dtype``, so a seed
        gives the same field in every precision.
        """
        g = _grid(self.n, generator.device, torch.float64)  # float64 noise: the same field for every dtype
        noise = torch.randn(batch, self.n, self.n, generator=generator, dtype=torch.float64, device=generator.device)
        filt = _log_normal(g.k2.sqrt(), peak_wavenumber) * g.mask
        omega = torch.fft.irfft2(torch.fft.rfft2(noise) * filt, s=(self.n, self.n))
        u, v = velocity_from_vorticity(omega)
        umax = (u.square() + v.square()).amax((-2, -1)).sqrt()
        return (omega * (max_velocity / umax)[:, None, None]).to(dtype)
