"""Lorenz-63 / Lorenz-96: equilibria, symmetries and the integrator's order."""

from __future__ import annotations

import math

import pytest
import torch

from physics.fields.lorenz import get_lorenz, lorenz63, lorenz63_fixed_points, lorenz96, rk4_step

D = torch.float64


def test_lorenz63_fixed_points_are_equilibria():
    fp = lorenz63_fixed_points()
    assert torch.allclose(lorenz63(fp), torch.zeros_like(fp), atol=1e-12)
    q = math.sqrt(8.0 / 3.0 * 27.0)
    assert torch.allclose(fp[1], torch.tensor([q, q, 27.0], dtype=D))
    # a generic point is not one
    assert lorenz63(torch.tensor([1.0, 2.0, 3.0], dtype=D)).abs().max() > 1


def test_lorenz96_equilibrium_and_ring_symmetry():
    x = torch.full((40,), 8.0, dtype=D)
    assert torch.allclose(lorenz96(x), torch.zeros_like(x))
    g = torch.Generator().manual_seed(0)
    y = torch.randn(3, 40, generator=g, dtype=D)
    # the ring has no preferred site: the tendency of a rotated state is the rotated tendency
    assert torch.allclose(lorenz96(torch.roll(y, 5, -1)), torch.roll(lorenz96(y), 5, -1))
    # energy identity: the advection term conserves sum x^2 / 2, so d/dt sum x^2/2 = -sum x^2 + F sum x
    assert torch.allclose((y * lorenz96(y)).sum(-1), -(y**2).sum(-1) + 8.0 * y.sum(-1))
    with pytest.raises(ValueError, match="at least 4"):
        lorenz96(torch.zeros(3))


def test_lorenz63_symmetry_and_volume_contraction():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, generator=g, dtype=D) * 5
    flip = torch.tensor([-1.0, -1.0, 1.0], dtype=D)  # (x, y, z) -> (-x, -y, z)
    assert torch.allclose(lorenz63(x * flip), lorenz63(x) * flip)
    jac = torch.autograd.functional.jacobian(lambda v: lorenz63(v), x[0])
    assert torch.isclose(torch.trace(jac), torch.tensor(-(10 + 1 + 8 / 3), dtype=D))


def test_rk4_is_fourth_order():
    """On x' = -x the one-step error of RK4 is O(dt^5): halving dt divides it by ~32."""
    errs = [abs(float(rk4_step(lambda v: -v, torch.tensor(1.0, dtype=D), dt)) - math.exp(-dt)) for dt in (0.2, 0.1)]
    assert 28 < errs[0] / errs[1] < 36


def test_advance_and_trajectory_shapes_and_errors():
    l96 = get_lorenz("lorenz96")
    g = torch.Generator().manual_seed(2)
    x = l96.random_state(4, g, dtype=D)
    traj = l96.trajectory(x, 6, 0.05)
    assert traj.shape == (4, 6, 40)
    assert torch.equal(traj[:, 0], x)
    assert torch.allclose(traj[:, 2], l96.advance(l96.advance(x, 0.05), 0.05))
    with pytest.raises(ValueError, match="40 variables"):
        l96.advance(torch.zeros(2, 3), 0.1)
    with pytest.raises(FloatingPointError, match="diverged"):
        get_lorenz("lorenz63").advance(torch.tensor([[1e30, 1e30, 1e30]], dtype=D), 1.0)
    with pytest.raises(ValueError, match="unknown Lorenz"):
        get_lorenz("lorenz84")


def test_lorenz63_climate_is_the_known_attractor():
    """After spin-up, z has mean ~23.5 and x, y are symmetric (long-run statistics of the classic attractor)."""
    l63 = get_lorenz("lorenz63")
    g = torch.Generator().manual_seed(3)
    x = l63.advance(l63.random_state(64, g, dtype=D), 10.0)
    traj = l63.trajectory(x, 200, 0.1)
    assert abs(float(traj[..., 2].mean()) - 23.5) < 1.0
    assert abs(float(traj[..., 0].mean())) < 1.0
