"""Closed-form Gaussian-to-Gaussian flows: the references the flow-matching code is checked against."""

import math

import numpy as np
import ot
import pytest
import torch

from moldiff.diffusion import FlowPath, flow_matching_loss, integrate_ode
from moldiff.diffusion.gaussians import GaussianBridge, gaussian_ot_map, gaussian_w2

M0, S0 = torch.tensor([1.0, -1.0], dtype=torch.float64), torch.tensor([[2.0, 0.8], [0.8, 0.6]], dtype=torch.float64)
M1, S1 = torch.tensor([-2.0, 0.5], dtype=torch.float64), torch.tensor([[0.5, -0.2], [-0.2, 1.5]], dtype=torch.float64)


def _draw(m, S, n, g):
    return m + torch.randn(n, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(S).T


@pytest.mark.parametrize("path", [FlowPath(), FlowPath(sigma=0.3), FlowPath(sigma=0.8, noise="bridge")],
                         ids=["linear", "constant-noise", "bridge"])
def test_exact_bridge_velocity_transports_source_to_data(path):
    bridge = GaussianBridge(M0, S0, M1, S1, path)
    g = torch.Generator().manual_seed(0)
    t_end = 1.0 - 1e-3 if path.noise == "bridge" else 1.0  # the bridge velocity is singular at the ends
    _, Sig_end = bridge.moments(t_end)
    x = _draw(bridge.moments(t_end)[0], Sig_end, 20_000, g)
    ts = torch.linspace(t_end, 1e-3 if path.noise == "bridge" else 0.0, 101, dtype=torch.float64)
    sol = integrate_ode(lambda y, t: bridge.velocity(y, t.expand(len(y))), x, ts, method="heun")
    mu, Sig = bridge.moments(float(ts[-1]))
    torch.testing.assert_close(sol.x.mean(0), mu, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(sol.x.T), Sig, atol=0.05, rtol=0.03)


def test_bridge_velocity_is_the_regression_of_the_conditional_target():
    """E[u_t | x_t] is affine; least squares of the sampled conditional targets on x_t recovers it, and the
    exact field has a lower flow-matching loss than a perturbed one."""
    path = FlowPath(sigma=0.5, noise="bridge")
    bridge = GaussianBridge(M0, S0, M1, S1, path)
    g = torch.Generator().manual_seed(1)
    n, t = 400_000, 0.35
    x0, x1 = _draw(M0, S0, n, g), _draw(M1, S1, n, g)
    tt = torch.full((n,), t, dtype=torch.float64)
    x_t, u = path.conditional(x0, x1, tt, generator=g)
    X = torch.cat([x_t, torch.ones(n, 1, dtype=torch.float64)], 1)
    coef = torch.linalg.lstsq(X, u).solution  # [3, 2]
    probe = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    fitted = torch.cat([probe, torch.ones(3, 1, dtype=torch.float64)], 1) @ coef
    torch.testing.assert_close(fitted, bridge.velocity(probe, torch.full((3,), t, dtype=torch.float64)), atol=0.02, rtol=0)
    exact = flow_matching_loss(bridge.velocity, x0[:20000], x1[:20000], path, generator=torch.Generator().manual_seed(2))
    off = flow_matching_loss(lambda x, s: bridge.velocity(x, s) + 0.1, x0[:20000], x1[:20000], path,
                             generator=torch.Generator().manual_seed(2))
    assert float(exact.mean()) < float(off.mean())


def test_gaussian_ot_map_is_the_monge_map():
    A, b = gaussian_ot_map(M0, S0, M1, S1)
    torch.testing.assert_close(A, A.T)
    assert bool((torch.linalg.eigvalsh(A) > 0).all())
    torch.testing.assert_close(A @ S0 @ A.T, S1)
    torch.testing.assert_close(A @ M0 + b, M1)
    # the map's transport cost is the Bures W2, and the exact discrete OT of samples approaches it
    g = torch.Generator().manual_seed(3)
    x = _draw(M0, S0, 200_000, g)
    cost = ((x @ A.T + b - x) ** 2).sum(1).mean()
    assert math.sqrt(float(cost)) == pytest.approx(gaussian_w2(M0, S0, M1, S1), rel=0.01)
    xs, ys = _draw(M0, S0, 800, g).numpy(), _draw(M1, S1, 800, g).numpy()
    emd = ot.emd2(np.full(800, 1 / 800), np.full(800, 1 / 800), ot.dist(xs, ys))
    assert math.sqrt(emd) == pytest.approx(gaussian_w2(M0, S0, M1, S1), rel=0.1)


def test_gaussian_w2_known_cases():
    eye = torch.eye(2, dtype=torch.float64)
    assert gaussian_w2(M0, eye, M0 + torch.tensor([3.0, 4.0], dtype=torch.float64), eye) == pytest.approx(5.0)
    assert gaussian_w2(M0, eye, M0, 4 * eye) == pytest.approx(math.sqrt(2.0))  # |1 - 2| per dimension
