"""Flow-matching paths: the conditional path's analytic moments and velocity, the marginal Gaussian process,
and velocity models through the shared samplers and likelihood."""

import math

import pytest
import torch

from moldiff.diffusion import Denoiser, FlowPath, PointCloudSpace, flow_matching_loss, log_likelihood, sample_ode
from moldiff.diffusion.processes import time_grid

from moldiff.diffusion.gaussians import GaussianBridge

from .gaussian import GaussianTarget


@pytest.mark.parametrize("t", [0.1, 0.3, 0.5, 0.8])
def test_bridge_variance_is_sigma2_t_1_minus_t(t):
    path = FlowPath(sigma=0.7, noise="bridge")
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = torch.randn(n, 2, generator=g, dtype=torch.float64)
    x1 = torch.randn(n, 2, generator=g, dtype=torch.float64)
    tt = torch.full((n,), t, dtype=torch.float64)
    x_t, _ = path.conditional(x0, x1, tt, generator=g)
    resid = x_t - ((1 - t) * x0 + t * x1)
    var = resid.var(0)
    expected = 0.7**2 * t * (1 - t)
    se = expected * math.sqrt(2 / n)
    assert torch.all((var - expected).abs() < 5 * se), (var, expected)
    assert float(path.noise_std(torch.tensor(t))) ** 2 == pytest.approx(expected)


@pytest.mark.parametrize("noise,sigma", [("constant", 0.0), ("constant", 0.1), ("bridge", 0.5)])
def test_conditional_velocity_is_the_time_derivative_of_the_path(noise, sigma):
    """For a fixed noise draw, u_t = d x_t / dt (central differences)."""
    path = FlowPath(sigma=sigma, noise=noise)
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0.2, 0.4, 0.5, 0.7, 0.9], dtype=torch.float64)
    h = 1e-6

    def at(tt):
        return path.conditional(x0, x1, tt, generator=torch.Generator().manual_seed(7))

    _, u = at(t)
    fd = (at(t + h)[0] - at(t - h)[0]) / (2 * h)
    torch.testing.assert_close(u, fd, atol=1e-6, rtol=1e-6)


def test_marginal_derivative_matches_finite_differences():
    for path in [FlowPath(), FlowPath(sigma=0.2), FlowPath(sigma=0.5, noise="bridge", prior_std=2.0)]:
        t = torch.tensor([0.05, 0.3, 0.6, 0.95], dtype=torch.float64)
        h = 1e-6
        da, ds = path.marginal_derivative(t)
        (ap, sp), (am, sm) = path.marginal(t + h), path.marginal(t - h)
        torch.testing.assert_close(da, (ap - am) / (2 * h))
        torch.testing.assert_close(ds, (sp - sm) / (2 * h), atol=1e-6, rtol=1e-6)


def _exact(path, mu, s2):
    """The exact marginal velocity of the I-CFM path from N(0, prior_std^2) to N(mu, diag s2), and the target."""
    bridge = GaussianBridge(torch.tensor(mu, dtype=torch.float64), torch.diag(torch.tensor(s2, dtype=torch.float64)),
                            torch.zeros(len(mu), dtype=torch.float64),
                            path.prior_std**2 * torch.eye(len(mu), dtype=torch.float64), path)
    return Denoiser(bridge.velocity, path, kind="velocity"), GaussianTarget(path, mu, s2)


@pytest.mark.parametrize("path", [FlowPath(), FlowPath(sigma=0.3, noise="bridge")], ids=["linear", "bridge"])
def test_velocity_conversions_match_the_exact_gaussian_score(path):
    """Two independent closed forms: the bridge's exact velocity converted to a score / x0 must equal the
    Gaussian marginal's exact score / posterior mean."""
    model, target = _exact(path, [1.0, -2.0], [0.25, 3.0])
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for tv in [0.1, 0.4, 0.9]:
        t = torch.full((16,), tv, dtype=torch.float64)
        torch.testing.assert_close(model.score(x, t), target.score(x, t))
        alpha, sigma = path.marginal(t)
        tweedie = (x + sigma[:, None] ** 2 * target.score(x, t)) / alpha[:, None]
        torch.testing.assert_close(model.x0(x, t), tweedie)


def test_flow_path_models_must_predict_the_velocity():
    with pytest.raises(ValueError, match="velocity"):
        Denoiser(lambda x, t: x, FlowPath(), kind="eps")


def test_exact_marginal_velocity_transports_the_source_to_the_data():
    """ODE sampling of the exact velocity field (I-CFM, Gaussian source) ends on the data Gaussian, and its
    likelihood is the data's analytic log-density."""
    path = FlowPath()
    model, target = _exact(path, [1.0, -2.0, 0.5], [0.25, 3.0, 0.6])
    g = torch.Generator().manual_seed(0)
    z = path.prior_sample(torch.zeros(20_000, 3, dtype=torch.float64), generator=g)
    x = sample_ode(model, z, time_grid(path, 100, dtype=torch.float64), progress=False, denoise=False)
    torch.testing.assert_close(x.mean(0), target.mu, atol=0.05, rtol=0)
    torch.testing.assert_close(x.var(0), target.s2, atol=0.08, rtol=0.03)
    pts = target.sample(0.0, 32, g)
    res = log_likelihood(model, pts, divergence="exact", rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(res.logp, target.logp(pts, 0.0), atol=1e-5, rtol=0)


def test_flow_matching_loss_is_minimised_by_the_conditional_expectation():
    """For x0 = a fixed point and a Gaussian source, the optimal velocity is known in closed form:
    v(x, t) = (x - x0) / t.  The loss of the optimum equals the (zero) irreducible variance."""
    path = FlowPath()
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([[1.0, -1.0]], dtype=torch.float64).expand(1000, 2)
    x1 = torch.randn(1000, 2, generator=g, dtype=torch.float64)
    best = flow_matching_loss(lambda x, t: (x - x0) / t[:, None], x0, x1, path, generator=g)
    worse = flow_matching_loss(lambda x, t: torch.zeros_like(x), x0, x1, path, generator=g)
    assert best.shape == (1000,)
    assert float(best.max()) < 1e-20 and float(worse.mean()) > 0.5


def test_flow_matching_loss_on_point_clouds_stays_in_the_subspace():
    batch = torch.repeat_interleave(torch.arange(4), 5)
    space = PointCloudSpace(batch, 4, pos_dims=3)
    g = torch.Generator().manual_seed(0)
    x0 = space.randn_like(torch.zeros(20, 3), g)
    x1 = space.randn_like(torch.zeros(20, 3), g)
    seen = {}

    def net(x, t):
        seen["com"] = space.com(x).abs().max()
        return torch.zeros_like(x)

    loss = flow_matching_loss(net, x0, x1, FlowPath(sigma=0.1), space=space, generator=g)
    assert loss.shape == (4,) and float(seen["com"]) < 1e-6
    with pytest.raises(ValueError, match="differ in shape"):
        flow_matching_loss(net, x0, x1[:10], FlowPath(), space=space)


def test_flow_path_rejects_bad_settings():
    with pytest.raises(ValueError, match="noise"):
        FlowPath(noise="pink")
    with pytest.raises(ValueError, match="sigma"):
        FlowPath(sigma=-1.0)


def test_sample_with_log_likelihood_matches_the_analytic_density():
    """One ODE pass from the prior gives samples and their exact log-density under the model."""
    from moldiff.diffusion import sample_with_log_likelihood

    path = FlowPath()
    model, target = _exact(path, [1.0, -2.0], [0.25, 3.0])
    z = path.prior_sample(torch.zeros(64, 2, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    res = sample_with_log_likelihood(model, z, divergence="exact", method="rk45", rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(res.x, target.flow_map(z, 0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(res.logp, target.logp(res.x, 0.0), atol=1e-5, rtol=0)
