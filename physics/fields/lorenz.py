"""Lorenz-63 and Lorenz-96: right-hand sides, a batched RK4 integrator and the systems' fixed points.

States are tensors ``[..., D]`` (any batch shape; ``D = 3`` for Lorenz-63, ``D = N`` for Lorenz-96) in the
systems' own nondimensional units; time is in model time units (MTU).  Everything is plain torch, so it
runs batched on the GPU and in float64 for tests.

* Lorenz (1963): ``x' = s (y - x)``, ``y' = x (r - z) - y``, ``z' = x y - b z`` with the classic
  ``s = 10, r = 28, b = 8/3``.
* Lorenz (1996): ``x_i' = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F`` on a ring of ``N`` variables,
  ``N = 40, F = 8`` the standard chaotic setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from moldiff.progress import progress_bar

__all__ = [
    "lorenz63",
    "lorenz96",
    "lorenz63_fixed_points",
    "rk4_step",
    "LorenzSystem",
    "LORENZ_SYSTEMS",
    "get_lorenz",
]

Rhs = Callable[[Tensor], Tensor]


def lorenz63(x: Tensor, sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0) -> Tensor:
    """``dx/dt`` of Lorenz-63 for states ``[..., 3]``."""
    a, b, c = x.unbind(-1)
    return torch.stack([sigma * (b - a), a * (rho - c) - b, a * b - beta * c], dim=-1)


def lorenz96(x: Tensor, forcing: float = 8.0) -> Tensor:
    """``dx/dt`` of Lorenz-96 for states ``[..., N]`` on a ring (``N >= 4``)."""
    if x.shape[-1] < 4:
        raise ValueError(f"Lorenz-96 needs at least 4 variables, got {x.shape[-1]}")
    return (torch.roll(x, -1, -1) - torch.roll(x, 2, -1)) * torch.roll(x, 1, -1) - x + forcing


def lorenz63_fixed_points(sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0) -> Tensor:
    """The three equilibria ``[3, 3]``: the origin and ``(+-sqrt(b (r - 1)), +-sqrt(b (r - 1)), r - 1)``."""
    q = math.sqrt(beta * (rho - 1.0))
    return torch.tensor([[0.0, 0.0, 0.0], [q, q, rho - 1.0], [-q, -q, rho - 1.0]], dtype=torch.float64)


def rk4_step(f: Rhs, x: Tensor, dt: float) -> Tensor:
    """One classical fourth-order Runge-Kutta step of ``x' = f(x)``."""
    k1 = f(x)
    k2 = f(x + 0.5 * dt * k1)
    k3 = f(x + 0.5 * dt * k2)
    k4 = f(x + dt * k3)
    return x + (dt / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)


@dataclass(frozen=True)
class LorenzSystem:
    """A Lorenz system with its integration step.

    Args:
        name: ``lorenz63`` or ``lorenz96``.
        dim: number of variables ``D``.
        dt: RK4 step (MTU); :meth:`advance` takes as many steps of at most ``dt`` as needed.
        params: keyword arguments of the right-hand side (``sigma, rho, beta`` or ``forcing``).
    """

    name: str
    dim: int
    dt: float = 0.01
    params: tuple[tuple[str, float], ...] = ()

    def rhs(self, x: Tensor) -> Tensor:
        fn = lorenz63 if self.name == "lorenz63" else lorenz96
        return fn(x, **dict(self.params))

    def advance(self, x: Tensor, duration: float) -> Tensor:
        """Integrate ``[..., D]`` states forward by ``duration`` MTU with RK4 steps of at most ``dt``."""
        if duration < 0:
            raise ValueError(f"duration must be >= 0, got {duration}")
        if x.shape[-1] != self.dim:
            raise ValueError(f"{self.name} states have {self.dim} variables, got shape {tuple(x.shape)}")
        n = max(1, math.ceil(duration / self.dt - 1e-9)) if duration > 0 else 0
        for _ in range(n):
            x = rk4_step(self.rhs, x, duration / n)
        if not torch.isfinite(x).all():
            raise FloatingPointError(f"{self.name}: the state diverged (non-finite values) within {duration} MTU")
        return x

    def trajectory(self, x0: Tensor, num_states: int, interval: float, *, progress: bool = False) -> Tensor:
        """States ``x(0), x(interval), ..., x((num_states - 1) interval)``: ``[..., D] -> [..., num_states, D]``."""
        out = [x0]
        x = x0
        for _ in progress_bar(range(num_states - 1), enabled=progress, desc=self.name, leave=False):
            x = self.advance(x, interval)
            out.append(x)
        return torch.stack(out, dim=-2)

    def random_state(self, batch: int, generator: torch.Generator, dtype=torch.float32) -> Tensor:
        """Initial conditions ``[batch, D]`` near the attractor's scale (spin up before use)."""
        x = torch.randn(batch, self.dim, generator=generator, dtype=dtype, device=generator.device)
        if self.name == "lorenz96":
            forcing = dict(self.params).get("forcing", 8.0)
            return forcing + x  # a perturbed equilibrium x_i = F
        return x + torch.tensor([0.0, 0.0, 25.0], dtype=dtype, device=x.device)


LORENZ_SYSTEMS: dict[str, LorenzSystem] = {
    "lorenz63": LorenzSystem("lorenz63", 3, dt=0.01, params=(("sigma", 10.0), ("rho", 28.0), ("beta", 8.0 / 3.0))),
    "lorenz96": LorenzSystem("lorenz96", 40, dt=0.01, params=(("forcing", 8.0),)),
}


def get_lorenz(name: str) -> LorenzSystem:
    if name not in LORENZ_SYSTEMS:
        raise ValueError(f"unknown Lorenz system {name!r}; choose one of {sorted(LORENZ_SYSTEMS)}")
    return LORENZ_SYSTEMS[name]
