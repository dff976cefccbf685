"""Probability-flow log-likelihood against analytic Gaussian log-densities."""

import math

import pytest
import torch

from moldiff.diffusion import VESDE, VPSDE, Denoiser, PointCloudSpace, SubVPSDE, log_likelihood
from moldiff.diffusion.likelihood import divergence_exact

from .gaussian import GaussianTarget


@pytest.mark.parametrize("proc", [VPSDE(), SubVPSDE(), VESDE(sigma_min=0.01, sigma_max=20.0)], ids=["vp", "subvp", "ve"])
def test_exact_divergence_matches_analytic_logp(proc):
    target = GaussianTarget(proc, [1.0, -2.0, 0.5], [0.25, 3.0, 0.6])
    g = torch.Generator().manual_seed(0)
    x = target.sample(proc.t_min, 64, g)
    res = log_likelihood(target.denoiser(), x, divergence="exact", rtol=1e-7, atol=1e-7)
    # the ODE maps x to the exact latent and the integrated divergence is the exact change of volume:
    # log p_tmin(x) = log p_1(z) + delta.  (The reported logp uses the prior N(0, prior_std^2) for p_1,
    # which differs from the exact p_1 by alpha(1) mu and s^2 terms: up to ~0.05 nats here.)
    m0, v0 = target.moments(proc.t_min)
    m1, v1 = target.moments(1.0)
    torch.testing.assert_close(res.z, m1 + (v1 / v0).sqrt() * (x - m0), atol=1e-5, rtol=0)
    torch.testing.assert_close(res.delta_logp + target.logp(res.z, 1.0), target.logp(x, proc.t_min), atol=1e-5, rtol=0)
    torch.testing.assert_close(res.prior_logp, proc.prior_logp(res.z))
    if not isinstance(proc, VESDE):  # VE's prior ignores the data mean entirely
        torch.testing.assert_close(res.logp, target.logp(x, proc.t_min), atol=0.1, rtol=0)
    assert res.nfe > 10
    assert res.bits_per_dim().shape == (64,)


def test_hutchinson_is_unbiased():
    proc = VPSDE()
    target = GaussianTarget(proc, [0.0] * 6, [0.5, 1.0, 2.0, 0.3, 1.5, 0.8])
    x = target.sample(proc.t_min, 1, torch.Generator().manual_seed(1)).expand(400, -1).clone()
    res = log_likelihood(target.denoiser(), x, divergence="hutchinson", method="heun", steps=100,
                         generator=torch.Generator().manual_seed(2))
    exact = target.logp(x[:1], proc.t_min)
    est = res.logp
    se = est.std() / math.sqrt(len(est))
    assert abs(est.mean() - exact) < 4 * se + 1e-2
    assert est.std() > 0  # it is a stochastic estimate


def test_point_cloud_likelihood_uses_the_zero_com_subspace():
    """Positions N(0, s2 P) on the zero-CoM subspace, features N(0, s2): analytic log-density has
    3 (n - 1) + F n degrees of freedom."""
    proc = VPSDE()
    sizes = torch.tensor([4, 7])
    batch = torch.repeat_interleave(torch.arange(2), sizes)
    space = PointCloudSpace(batch, 2, pos_dims=3)
    s2 = 0.7

    def score(x, t):
        alpha, sigma = proc.marginal(t)
        return space.project(-x / space.expand(alpha**2 * s2 + sigma**2, x))

    model = Denoiser(score, proc, kind="score", space=space)
    g = torch.Generator().manual_seed(0)
    a, s = proc.marginal(torch.tensor(proc.t_min, dtype=torch.float64))
    var = a**2 * s2 + s**2
    x = var.sqrt() * space.randn_like(torch.zeros(11, 5, dtype=torch.float64), g)
    dof = space.dof(x)
    assert dof.tolist() == [3 * 3 + 2 * 4, 3 * 6 + 2 * 7]
    analytic = -0.5 * space.sum(x**2) / var - 0.5 * dof * torch.log(2 * math.pi * var)
    ests = torch.stack([
        log_likelihood(model, x, method="heun", steps=200, generator=torch.Generator().manual_seed(k)).logp
        for k in range(30)
    ])
    se = ests.std(0) / math.sqrt(len(ests))
    assert torch.all((ests.mean(0) - analytic).abs() < 4 * se + 5e-3), (ests.mean(0), analytic)


def test_exact_divergence_on_point_clouds_is_the_subspace_trace():
    """v(x) = P A P x for a random matrix A: the exact divergence must be trace(P A P) per graph, i.e. the
    divergence on the zero-CoM subspace, not the trace of A over all coordinates."""
    sizes = [3, 5]
    batch = torch.repeat_interleave(torch.arange(2), torch.tensor(sizes))
    space = PointCloudSpace(batch, 2, pos_dims=2)
    D = 3  # two position columns and one free feature
    g = torch.Generator().manual_seed(0)
    mats = [torch.randn(n * D, n * D, generator=g, dtype=torch.float64) for n in sizes]

    def v_fn(x):
        out, start = [], 0
        for n, A in zip(sizes, mats):
            out.append((A @ x[start : start + n].reshape(-1)).reshape(n, D))
            start += n
        return space.project(torch.cat(out))

    x = space.randn_like(torch.zeros(8, D, dtype=torch.float64), g).requires_grad_(True)
    div = divergence_exact(v_fn(space.project(x)), x, space)
    for k, n in enumerate(sizes):
        P = torch.eye(n * D, dtype=torch.float64)
        c = torch.eye(n, dtype=torch.float64) - 1.0 / n  # centring on each position column
        for d in range(2):
            idx = torch.arange(n) * D + d
            P[idx[:, None], idx[None, :]] = c
        assert torch.isclose(div[k], torch.trace(P @ mats[k] @ P), atol=1e-10), (div[k], torch.trace(P @ mats[k] @ P))


@pytest.mark.usefixtures("global_rng")
@pytest.mark.parametrize("features", [0, 2])
def test_fast_exact_divergence_equals_the_trace_over_all_coordinates(features):
    """On an EGNN (graphs of 3, 5 and 4 nodes, float64): the Helmert-basis loop and its vmap version equal the
    trace of d v(P x) / dx summed over every coordinate's unit vector (the former implementation) to 1e-6."""
    from moldiff.diffusion.likelihood import divergence_exact_vmap, point_cloud_basis
    from moldiff.nn.backbones import build_backbone

    torch.manual_seed(0)
    sizes = [3, 5, 4]
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
    space = PointCloudSpace(batch, 3, pos_dims=3)
    net = build_backbone("egnn", features, hidden=8, layers=2, pos_dims=3).double().eval()
    t = torch.tensor([0.3, 0.6, 0.9], dtype=torch.float64)
    fn = lambda z: space.project(net(space.project(z), t, batch, 3, max(sizes)))  # noqa: E731
    x = space.randn_like(torch.zeros(12, 3 + features, dtype=torch.float64), torch.Generator().manual_seed(1))
    x = x.requires_grad_(True)
    v = fn(x)
    ref = torch.zeros(3, dtype=torch.float64)
    for i in range(x.shape[0]):
        for d in range(x.shape[1]):
            (g,) = torch.autograd.grad(v[i, d], x, retain_graph=True)
            ref[batch[i]] += g[i, d]
    basis = point_cloud_basis(space, x)
    assert len(basis) == (max(sizes) - 1) * 3 + max(sizes) * features
    torch.testing.assert_close(divergence_exact(v, x, space), ref, atol=0, rtol=1e-6)
    v2, div = divergence_exact_vmap(fn, x, space)
    torch.testing.assert_close(div, ref, atol=0, rtol=1e-6)
    torch.testing.assert_close(v2, v, atol=0, rtol=0)
    _, div = divergence_exact_vmap(fn, x, space, chunk_size=4)
    torch.testing.assert_close(div, ref, atol=0, rtol=1e-6)


def test_exact_and_hutchinson_agree_on_point_clouds():
    proc = VPSDE()
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor([4, 4, 6]))
    space = PointCloudSpace(batch, 3, pos_dims=3)
    s2 = 0.5

    def score(x, t):
        alpha, sigma = proc.marginal(t)
        return space.project(-x / space.expand(alpha**2 * s2 + sigma**2, x))

    model = Denoiser(score, proc, kind="score", space=space)
    x = space.randn_like(torch.zeros(14, 3, dtype=torch.float64), torch.Generator().manual_seed(3))
    a, s = proc.marginal(torch.tensor(proc.t_min, dtype=torch.float64))
    var = a**2 * s2 + s**2
    analytic = -0.5 * space.sum(x**2) / var - 0.5 * space.dof(x) * torch.log(2 * math.pi * var)
    exact = log_likelihood(model, x, divergence="exact", method="heun", steps=200).logp
    torch.testing.assert_close(exact, analytic, atol=5e-3, rtol=0)
    batched = log_likelihood(model, x, divergence="exact_vmap", method="heun", steps=200).logp
    torch.testing.assert_close(batched, exact, atol=1e-10, rtol=0)
