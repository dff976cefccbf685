"""2D target distributions (FFJORD's definitions), drawn with an explicit ``torch.Generator``."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["TARGETS", "sample_target"]


def eight_gaussians(n: int, generator: torch.Generator) -> Tensor:
    """Eight Gaussians (std 0.5) on a circle of radius 4, the whole scaled by 1/1.414."""
    angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    centers = 4.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    idx = torch.randint(0, 8, (n,), generator=generator)
    pts = centers[idx] + 0.5 * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (pts / 1.414).float()


def two_moons(n: int, generator: torch.Generator) -> Tensor:
    """scikit-learn's ``make_moons(noise=0.1)`` scaled by 2 and shifted by (-1, -0.2)."""
    n_out = n // 2
    n_in = n - n_out
    a_out = torch.rand(n_out, generator=generator, dtype=torch.float64) * math.pi
    a_in = torch.rand(n_in, generator=generator, dtype=torch.float64) * math.pi
    outer = torch.stack([torch.cos(a_out), torch.sin(a_out)], dim=1)
    inner = torch.stack([1 - torch.cos(a_in), 1 - torch.sin(a_in) - 0.5], dim=1)
    pts = torch.cat([outer, inner]) + 0.1 * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    pts = pts[torch.randperm(n, generator=generator)]
    return (pts * 2 + torch.tensor([-1.0, -0.2], dtype=torch.float64)).float()


def checkerboard(n: int, generator: torch.Generator) -> Tensor:
    """Uniform on the 8 black squares of a 4x4 checkerboard over [-4, 4]^2."""
    x1 = torch.rand(n, generator=generator, dtype=torch.float64) * 4 - 2
    x2_ = torch.rand(n, generator=generator, dtype=torch.float64) - torch.randint(0, 2, (n,), generator=generator) * 2
    x2 = x2_ + torch.floor(x1) % 2
    return (torch.stack([x1, x2], dim=1) * 2).float()


TARGETS = {"8gaussians": eight_gaussians, "two_moons": two_moons, "checkerboard": checkerboard}


def sample_target(name: str, n: int, generator: torch.Generator) -> Tensor:
    """``n`` points ``[n, 2]`` from target ``name``."""
    if name not in TARGETS:
        raise ValueError(f"unknown 2D target {name!r}; choose one of {sorted(TARGETS)}")
    return TARGETS[name](n, generator)
