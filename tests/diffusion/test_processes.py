"""Noise processes: SDE/marginal consistency, schedules, priors, time grids."""

import math

import numpy as np
import pytest
import torch

from moldiff.diffusion import (
    VESDE,
    Denoiser,
    VPSDE,
    DiscreteVP,
    EuclideanSpace,
    FlowPath,
    PointCloudSpace,
    SubVPSDE,
    build_process,
    ddpm_alphas_cumprod,
    denoising_loss,
    sample_time,
    time_grid,
)

PROCS = {
    "vp": VPSDE(),
    "subvp": SubVPSDE(),
    "ve": VESDE(),
    "ddpm_linear": DiscreteVP("linear", 1000),
    "ddpm_cosine": DiscreteVP("cosine", 1000),
    "ddpm_poly2": DiscreteVP("polynomial_2", 1000),
}


@pytest.mark.parametrize("name", list(PROCS))
def test_marginal_solves_the_sde(name):
    """For x_t = alpha x0 + sigma eps: d(alpha^2)/dt = 2 f alpha^2 and d(sigma^2)/dt = 2 f sigma^2 + g^2."""
    proc = PROCS[name]
    if proc.num_levels:  # between levels, where the interpolation is smooth
        t = (torch.arange(3, 990, 37, dtype=torch.float64) + 0.5) / proc.num_levels
    else:
        t = torch.linspace(max(proc.t_min, 0.01), 0.99, 25, dtype=torch.float64)
    h = 1e-6
    a_p, s_p = proc.marginal(t + h)
    a_m, s_m = proc.marginal(t - h)
    a, s = proc.marginal(t)
    d_a2 = (a_p**2 - a_m**2) / (2 * h)
    d_s2 = (s_p**2 - s_m**2) / (2 * h)
    torch.testing.assert_close(d_a2, 2 * proc.f(t) * a**2, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(d_s2, 2 * proc.f(t) * s**2 + proc.g2(t), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", list(PROCS))
def test_snr_decreases_and_prior_matches_t1(name):
    proc = PROCS[name]
    t = torch.linspace(proc.t_min, 1.0, 200, dtype=torch.float64)
    snr = proc.snr(t)
    assert torch.all(snr[1:] < snr[:-1])
    torch.testing.assert_close(proc.log_snr(t), torch.log(snr))
    a1, s1 = proc.marginal(torch.tensor(1.0, dtype=torch.float64))
    # the prior N(0, prior_std^2) is close to p_1: little signal left, std as the prior's
    assert float(a1 / s1) < 0.03 and abs(float(s1) - proc.prior_std) / proc.prior_std < 1e-3


def test_vp_closed_forms():
    proc = VPSDE(0.1, 20.0)
    t = torch.tensor(0.5, dtype=torch.float64)
    B = 0.1 * 0.5 + 0.5 * 19.9 * 0.25
    a, s = proc.marginal(t)
    assert float(a) == pytest.approx(math.exp(-0.5 * B))
    assert float(s) == pytest.approx(math.sqrt(1 - math.exp(-B)))
    a2, s2 = SubVPSDE(0.1, 20.0).marginal(t)
    assert float(a2) == pytest.approx(float(a)) and float(s2) == pytest.approx(1 - math.exp(-B))
    _, sv = VESDE(0.01, 50.0).marginal(t)
    assert float(sv) == pytest.approx(0.01 * 5000**0.5)


def test_ddpm_tables():
    lin = ddpm_alphas_cumprod("linear", 1000)
    assert lin[0] == 1.0 and lin[-1] == pytest.approx(4.0358e-05, rel=1e-3)  # Ho et al.'s alpha_bar_T
    cos = ddpm_alphas_cumprod("cosine", 1000)
    assert cos[0] == 1.0 and np.all(np.diff(cos) < 0) and cos[-1] < 1e-6
    poly = ddpm_alphas_cumprod("polynomial_2", 1000, precision=1e-5)
    assert np.all(np.diff(poly) <= 0)
    assert poly[0] == pytest.approx(1 - 1e-5, abs=1e-7)  # precision squeeze keeps level 0 slightly noisy
    assert poly[-1] == pytest.approx(1e-5, rel=0.1)
    raw = (poly - 1e-5) / (1 - 2e-5)
    assert np.all(raw[1:] / raw[:-1] >= 0.001 - 1e-9)  # EDM's step clipping
    # EDM's x = linspace(0, T+1, T+1): alpha^2 at level i is (1 - (i (T+1)/T / (T+1))^2)^2 before clipping
    i = 500
    assert raw[i] == pytest.approx((1 - (i / 1000) ** 2) ** 2, rel=1e-6)
    with pytest.raises(ValueError, match="unknown DDPM schedule"):
        ddpm_alphas_cumprod("quadratic", 10)


def test_discrete_process_hits_its_table_on_levels():
    proc = DiscreteVP("cosine", 100)
    levels = torch.arange(1, 101, dtype=torch.float64) / 100
    a, s = proc.marginal(levels)
    torch.testing.assert_close(a**2, proc.alphas_cumprod()[1:], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a**2 + s**2, torch.ones_like(a))


def test_time_grids():
    assert time_grid(VPSDE(), 4).tolist() == pytest.approx([1.0, 0.75025, 0.5005, 0.25075, 0.001])
    full = time_grid(DiscreteVP("polynomial_2", 50), 50, dtype=torch.float64)
    assert torch.allclose(full * 50, torch.arange(50, -1, -1, dtype=torch.float64))
    skip = time_grid(DiscreteVP("linear", 100), 10, dtype=torch.float64)
    assert len(skip) == 11 and skip[0] == 1.0 and skip[-1] == pytest.approx(0.01)
    with pytest.raises(ValueError):
        time_grid(DiscreteVP("linear", 10), 11)


@pytest.mark.parametrize("a, b", [(1.0, 2.0), (2.0, 5.0), (1.0, 1.0)])
def test_beta_training_times_follow_their_law(a, b):
    """Beta(a, b) times by the inverse CDF: the empirical CDF within the Kolmogorov-Smirnov bound of the exact one
    (scipy's regularised incomplete beta), on [0, 1] for a flow and on [t_min, 1] for an SDE; the generator alone
    fixes the draw."""
    from scipy.special import betainc

    n = 20_000
    t = sample_time(FlowPath(), n, distribution="beta", beta_a=a, beta_b=b, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    ts = t.sort().values.numpy()
    cdf = betainc(a, b, ts)
    ks = max(abs(cdf - (np.arange(1, n + 1) / n)).max(), abs(cdf - (np.arange(n) / n)).max())
    assert ks < 1.36 * 1.5 / n**0.5  # 1.36 / sqrt(n): the 5 % critical value; 1.5x keeps false alarms below 1e-4
    assert abs(t.mean().item() - a / (a + b)) < 5 * (a * b / ((a + b) ** 2 * (a + b + 1)) / n) ** 0.5
    again = sample_time(FlowPath(), n, distribution="beta", beta_a=a, beta_b=b,
                        generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(t, again)
    vp = sample_time(VPSDE(), 1000, distribution="beta", beta_a=a, beta_b=b, generator=torch.Generator().manual_seed(1))
    assert vp.min() >= VPSDE().t_min and vp.max() <= 1


def test_beta_training_times_refuse_bad_input():
    with pytest.raises(ValueError, match="beta_a, beta_b > 0"):
        sample_time(FlowPath(), 3, distribution="beta", beta_a=0.0)
    with pytest.raises(ValueError, match="discrete schedule"):
        sample_time(DiscreteVP("linear", 10), 3, distribution="beta")


def test_training_times():
    g = torch.Generator().manual_seed(0)
    t = sample_time(DiscreteVP("polynomial_2", 10), 5000, generator=g)
    assert set((t * 10).round().long().tolist()) == set(range(11))  # EDM trains on levels 0..T
    t = sample_time(DiscreteVP("linear", 10), 5000, generator=g)
    assert (t * 10).round().min() == 1
    t = sample_time(VPSDE(), 5000, generator=g)
    assert t.min() >= 1e-3 and t.max() <= 1


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_prior_logp_is_gaussian(name):
    proc = PROCS[name]
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    ref = torch.distributions.Normal(0.0, proc.prior_std).log_prob(x).sum(-1)
    torch.testing.assert_close(proc.prior_logp(x), ref)


def test_losses_are_per_sample_and_zero_for_the_exact_answer():
    proc = VPSDE()
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.full((32,), 0.3, dtype=torch.float64)

    def oracle_x0(x_t, t_):  # knows x0: the x0 loss is exactly zero
        return x0

    loss = denoising_loss(Denoiser(oracle_x0, proc, kind="x0"), x0, t=t, generator=torch.Generator().manual_seed(1))
    assert loss.shape == (32,) and torch.all(loss == 0)
    a, s = proc.marginal(t[:1])

    def oracle_eps(x_t, t_):
        return (x_t - a * x0) / s

    loss = denoising_loss(Denoiser(oracle_eps, proc, kind="eps"), x0, t=t, generator=torch.Generator().manual_seed(1))
    assert loss.max() < 1e-20
    with pytest.raises(ValueError, match="prediction kind"):
        denoising_loss(Denoiser(oracle_eps, proc, kind="v"), x0)


def test_build_process():
    assert isinstance(build_process("ve", sigma_max=10.0), VESDE)
    with pytest.raises(ValueError, match="unknown process"):
        build_process("edm")
