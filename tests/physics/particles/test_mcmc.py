import math

import numpy as np
import pytest
import torch

from physics.particles.energies import SYSTEMS
from physics.particles.mcmc import MCMCResult, autocorrelation, integrated_autocorr_time, mala

MU = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
SIGMA = torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=torch.float64)


def gaussian_energy(x):
    """``x [C, 1, 4]`` -> ``[C]``: N(MU, diag(SIGMA^2))."""
    return 0.5 * (((x[:, 0] - MU) / SIGMA) ** 2).sum(-1)


def harmonic_energy(x):
    """Particles bound to their centre of mass: ``sum_i |x_i - com|^2 / 2``."""
    return 0.5 * (x - x.mean(-2, keepdim=True)).pow(2).sum((-2, -1))


def _chain_stats(values):
    """Mean over chains of per-chain means, and its standard error from the spread of the independent chains.
    ``values [C, K, ...] -> (mean [...], se [...])``."""
    chain_means = values.mean(1)
    return chain_means.mean(0), chain_means.std(0) / math.sqrt(values.shape[0])


def test_mala_gaussian_moments_and_adaptation():
    g = torch.Generator().manual_seed(0)
    C = 256
    x0 = 5.0 * torch.randn(C, 1, 4, generator=g, dtype=torch.float64)  # overdispersed start
    res = mala(gaussian_energy, x0, n_steps=1500, step_size=0.05, generator=g, burn_in=600, thin=10,
               zero_com=False, progress=False)
    assert isinstance(res, MCMCResult)
    assert res.samples.shape == (C, 150, 1, 4) and res.energies.shape == (C, 150)
    assert res.energy_trace.shape == (C, 2100) and res.mean_energy_trace.shape == (2100,)
    torch.testing.assert_close(res.energies, gaussian_energy(res.samples.reshape(-1, 1, 4)).reshape(C, 150))
    x = res.samples[:, :, 0]  # [C, K, 4]
    mean, se = _chain_stats(x)
    assert ((mean - MU).abs() < 4 * se).all(), (mean, se)
    assert (se < 0.05 * SIGMA).all()  # the check has teeth
    var, var_se = _chain_stats((x - MU) ** 2)
    assert ((var - SIGMA**2).abs() < 4 * var_se).all(), (var, var_se)
    assert abs(res.acceptance.mean().item() - 0.574) < 0.05
    assert res.step_size.shape == (C,) and (res.step_size > 0).all()


def test_mala_metropolis_correction_removes_discretisation_bias():
    """A large fixed step (no burn-in, no adaptation): unadjusted Langevin would give variance 1 / (1 - h/2)
    = 1.67 on N(0, 1); MALA's accept/reject step gives exactly 1."""
    g = torch.Generator().manual_seed(1)
    C, h = 512, 0.8
    x0 = torch.randn(C, 1, 3, generator=g, dtype=torch.float64)
    res = mala(lambda x: 0.5 * x.pow(2).sum((-2, -1)), x0, n_steps=400, step_size=h, generator=g, thin=4,
               zero_com=False, progress=False)
    var, se = _chain_stats(res.samples[:, :, 0].pow(2))
    assert ((var - 1.0).abs() < 4 * se).all(), (var, se)
    assert (var < 1.2).all()
    torch.testing.assert_close(res.step_size, torch.full((C,), h, dtype=torch.float64))  # frozen without burn-in


def test_mala_zero_com_harmonic_particles():
    """In the zero-CoM subspace each coordinate of sum|x_i - com|^2 / 2 has variance 1 - 1/n."""
    g = torch.Generator().manual_seed(2)
    C, n, d = 128, 5, 3
    x0 = torch.randn(C, n, d, generator=g, dtype=torch.float64) + 7.0  # off-centre start is projected
    res = mala(harmonic_energy, x0, n_steps=600, step_size=0.3, generator=g, burn_in=200, thin=3, progress=False)
    x = res.samples  # [C, K, n, d]
    assert x.mean(-2).abs().max() < 1e-10  # chains stay in the zero-CoM subspace
    var, se = _chain_stats(x.pow(2).reshape(C, x.shape[1], -1))
    assert ((var - (1 - 1 / n)).abs() < 4 * se).all(), (var, se)
    assert abs(var.mean().item() - 0.8) < 0.03
    assert abs(res.acceptance.mean().item() - 0.574) < 0.06


def test_mala_closed_form_gradient_path_and_reproducibility():
    lj = SYSTEMS["lj13"]
    g0 = torch.Generator().manual_seed(3)
    x0 = torch.randn(8, 13, 3, generator=g0, dtype=torch.float64) * 1.5
    from physics.particles.reference import minimize_energy

    x0 = minimize_energy(lj, x0, steps=100)
    kw = dict(n_steps=40, step_size=1e-3, burn_in=20, thin=4, progress=False)
    a = mala(lj.reduced_energy, x0, generator=torch.Generator().manual_seed(4), **kw)
    b = mala(lj.reduced_energy, x0, generator=torch.Generator().manual_seed(4), **kw)
    c = mala(lj.reduced_energy, x0, generator=torch.Generator().manual_seed(4),
             energy_and_grad_fn=lj.reduced_energy_and_grad, **kw)
    d = mala(lj.reduced_energy, x0, generator=torch.Generator().manual_seed(5), **kw)
    assert torch.equal(a.samples, b.samples) and torch.equal(a.energy_trace, b.energy_trace)
    torch.testing.assert_close(a.samples, c.samples)  # autograd and closed form: same chain up to rounding
    assert not torch.equal(a.samples, d.samples)


def test_mala_leaves_global_rng_alone_and_options():
    state = torch.random.get_rng_state()
    g = torch.Generator().manual_seed(6)
    x0 = torch.randn(4, 1, 2, generator=g)
    res = mala(lambda x: 0.5 * x.pow(2).sum((-2, -1)), x0, n_steps=0, step_size=0.1, generator=g, burn_in=5,
               zero_com=False, trace_chains=2, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert res.samples.shape == (4, 0, 1, 2) and res.energy_trace.shape == (2, 5)
    assert torch.isnan(res.acceptance).all()
    assert res.samples.dtype == torch.float32 and res.final_state.shape == (4, 1, 2)
    with pytest.raises(ValueError):
        mala(lambda x: x.sum((-2, -1)), x0[:, 0], n_steps=1, step_size=0.1, generator=g, progress=False)
    with pytest.raises(ValueError, match="positive"):
        mala(lambda x: x.sum((-2, -1)), x0, n_steps=1, step_size=0.0, generator=g, progress=False)


def test_mala_rejects_non_finite_proposals():
    """A hard wall (infinite energy for |x| > 1): no chain ever leaves the box."""
    def wall(x):
        inside = (x.abs() <= 1).flatten(1).all(1)
        return torch.where(inside, 0.1 * x.pow(2).flatten(1).sum(1), torch.full_like(x[:, 0, 0], math.inf))

    g = torch.Generator().manual_seed(7)
    x0 = torch.zeros(64, 1, 2, dtype=torch.float64)
    res = mala(wall, x0, n_steps=200, step_size=0.5, generator=g, zero_com=False, progress=False)
    assert res.samples.abs().max() <= 1 and torch.isfinite(res.energies).all()


def test_integrated_autocorr_time_ar1():
    rng = np.random.default_rng(0)
    phi, M, T = 0.9, 16, 20_000
    x = np.zeros((M, T))
    noise = rng.standard_normal((M, T))
    for t in range(1, T):
        x[:, t] = phi * x[:, t - 1] + noise[:, t]
    tau = integrated_autocorr_time(x)
    assert tau == pytest.approx((1 + phi) / (1 - phi), rel=0.1)
    assert integrated_autocorr_time(x[0]) == pytest.approx(19.0, rel=0.3)
    assert integrated_autocorr_time(torch.from_numpy(rng.standard_normal(5000))) == pytest.approx(1.0, abs=0.15)
    assert math.isnan(integrated_autocorr_time(np.ones(100)))  # a stuck chain has no defined tau
    rho = autocorrelation(x)
    assert rho[0] == 1.0 and rho[1] == pytest.approx(phi, abs=0.02)
