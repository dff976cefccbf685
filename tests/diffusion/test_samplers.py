"""Every sampler against the exact score of a Gaussian target: moments within 3 standard errors, and
the error falls with the number of steps as the method's order predicts."""

import math

import pytest
import torch

from moldiff.diffusion import (
    VESDE,
    VPSDE,
    DiscreteVP,
    PointCloudSpace,
    SubVPSDE,
    Denoiser,
    get_sampler,
    sample_ode,
    time_grid,
)

from .gaussian import GaussianTarget

PROCESSES = {
    "vp": VPSDE(),
    "subvp": SubVPSDE(),
    "ve": VESDE(sigma_min=0.01, sigma_max=20.0),
    "ddpm_poly2": DiscreteVP("polynomial_2", 1000),
    "ddpm_cosine": DiscreteVP("cosine", 1000),
    "ddpm_linear": DiscreteVP("linear", 1000),
}
SAMPLER_KW = {
    "ancestral": {},
    "ddim": {},
    "euler_maruyama": {},
    "pc": {"snr": 0.05},  # Langevin's own O(step) variance bias is ~snr^2: keep it below the test's resolution
    "ode_euler": {},
    "ode_heun": {},
    "ode_rk45": {"rtol": 1e-6, "atol": 1e-6},
    "heun_churn": {"s_churn": 5.0},  # EDM's stochastic Heun: 2.5 % more noise level per step, then Heun
}
MU, S2 = [1.0, -2.0], [0.25, 4.0]


# Fine enough grids for the first-order methods; ancestral sampling of a narrow target (var 0.25 against
# a unit-variance prior) converges slowly (see test_sde_weak_error_falls_with_steps).
STEPS = {"ancestral": 1000, "ddim": 1000, "euler_maruyama": 1000, "ode_euler": 1000, "pc": 400, "ode_heun": 400, "ode_rk45": 1,
         "heun_churn": 200}


def _run(target, name, steps, n, seed, *, matched=False, **kw):
    g = torch.Generator().manual_seed(seed)
    x1 = target.sample(1.0, n, g)  # start from the exact marginal at t = 1: tests the sampler, not the prior
    if matched:  # exact first two moments: the start's own sampling error would otherwise count against the sampler
        m, v = target.moments(1.0)
        x1 = m + (x1 - x1.mean(0)) / x1.std(0) * v.sqrt()
    ts = time_grid(target.process, steps, dtype=torch.float64)
    return get_sampler(name)(target.denoiser(), x1, ts, generator=g, progress=False, denoise=False, **kw)


@pytest.mark.parametrize("proc_name", list(PROCESSES))
@pytest.mark.parametrize("sampler", list(SAMPLER_KW))
def test_sampler_moments_match_exact_marginal(proc_name, sampler):
    proc = PROCESSES[proc_name]
    target = GaussianTarget(proc, MU, S2)
    n = 8000
    steps = STEPS[sampler]
    if proc.num_levels:
        steps = min(steps, proc.num_levels - round(proc.t_min * proc.num_levels))
    x = _run(target, sampler, steps, n, seed=1, matched=True, **SAMPLER_KW[sampler])
    m, v = target.moments(float(time_grid(proc, steps, dtype=torch.float64)[-1]))
    se_mean = (v / n).sqrt()
    se_var = v * math.sqrt(2 / (n - 1))
    assert torch.all((x.mean(0) - m).abs() < 3 * se_mean), (x.mean(0), m)
    assert torch.all((x.var(0) - v).abs() < 3 * se_var), (x.var(0), v)


@pytest.mark.parametrize("proc_name", ["vp", "subvp", "ve"])
@pytest.mark.parametrize("method,order", [("euler", 1), ("heun", 2)])
def test_ode_convergence_order(proc_name, method, order):
    """Deterministic: compare with the exact (affine) flow map; halving the step divides the error by 2^order.
    (Discrete schedules are left out: their log-SNR is piecewise linear in t, so the ODE's coefficients
    are only piecewise smooth and off-level grids lose the second order.)"""
    proc = PROCESSES[proc_name]
    target = GaussianTarget(proc, MU, S2)
    g = torch.Generator().manual_seed(0)
    x1 = target.sample(1.0, 256, g)
    t_end = 0.05  # away from t_min, where the VP/VE drift is stiff and the asymptotic regime starts late
    errs = []
    for steps in (50, 100, 200):
        ts = torch.linspace(1.0, t_end, steps + 1, dtype=torch.float64)
        x = sample_ode(target.denoiser(), x1, ts, method=method, progress=False, denoise=False)
        errs.append((x - target.flow_map(x1, t_end)).abs().max().item())
    rates = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert all(abs(r - order) < 0.3 for r in rates), (errs, rates)


def test_rk45_meets_tolerance_and_adapts():
    proc = PROCESSES["vp"]
    target = GaussianTarget(proc, MU, S2)
    g = torch.Generator().manual_seed(0)
    x1 = target.sample(1.0, 128, g)
    ts = torch.tensor([1.0, proc.t_min], dtype=torch.float64)
    loose, tight = target.denoiser(), target.denoiser()
    xa = sample_ode(loose, x1, ts, method="rk45", rtol=1e-3, atol=1e-3, progress=False, denoise=False)
    xb = sample_ode(tight, x1, ts, method="rk45", rtol=1e-8, atol=1e-8, progress=False, denoise=False)
    exact = target.flow_map(x1, proc.t_min)
    assert (xb - exact).abs().max() < 1e-5
    assert (xa - exact).abs().max() > (xb - exact).abs().max()
    assert tight.nfe > loose.nfe


@pytest.mark.parametrize("sampler,grid", [("euler_maruyama", (32, 128)), ("ancestral", (128, 512))])
def test_sde_weak_error_falls_with_steps(sampler, grid):
    """Weak order 1: the variance error at 4x the steps is about 4x smaller (1D, many samples).
    Measured (VP, target N(0.5, 0.04)): EM 0.18 -> 0.025, ancestral 0.19 -> 0.05 relative variance error;
    ancestral sampling of a narrow target reaches the asymptotic regime late."""
    proc = VPSDE()
    target = GaussianTarget(proc, [0.5], [0.04])
    n = 200_000
    errs = []
    for steps in grid:
        x = _run(target, sampler, steps, n, seed=3)
        _, v = target.moments(proc.t_min)
        errs.append(abs(x.var(0).item() - v.item()) / v.item())
    se = math.sqrt(2 / n)
    assert errs[0] > 10 * se  # the coarse grid's bias is well resolved
    assert errs[0] / errs[1] > 2.5, errs  # ~4 for a first-order method, well above the 1 of no convergence


def test_ancestral_on_full_ddpm_chain_is_exact_for_a_point_mass_free_target():
    """On every level of a discrete schedule the ancestral chain matches the marginal at the last level."""
    proc = DiscreteVP("linear", 1000)
    target = GaussianTarget(proc, [0.3, -0.7], [0.5, 1.5])
    x = _run(target, "ancestral", 999, 20_000, seed=5)
    m, v = target.moments(proc.t_min)
    assert torch.all((x.mean(0) - m).abs() < 3 * (v / 20_000).sqrt())
    assert torch.all((x.var(0) - v).abs() < 3 * v * math.sqrt(2 / 20_000))


def test_samplers_are_reproducible_with_a_generator():
    target = GaussianTarget(PROCESSES["vp"], MU, S2)
    a = _run(target, "pc", 20, 64, seed=11)
    b = _run(target, "pc", 20, 64, seed=11)
    c = _run(target, "pc", 20, 64, seed=12)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_callback_sees_every_step():
    target = GaussianTarget(PROCESSES["vp"], MU, S2)
    seen = []
    g = torch.Generator().manual_seed(0)
    ts = time_grid(target.process, 10, dtype=torch.float64)
    get_sampler("euler_maruyama")(target.denoiser(), target.sample(1.0, 4, g), ts, generator=g, progress=False,
                                  callback=lambda d: seen.append(float(d["t"])))
    assert seen == pytest.approx(ts[1:].tolist())


@pytest.mark.usefixtures("global_rng")
@pytest.mark.parametrize("sampler", list(SAMPLER_KW))
def test_point_cloud_samplers_stay_zero_com(sampler):
    """Zero-CoM point clouds: a score in the subspace keeps |CoM| < 1e-6 through every sampler."""
    torch.manual_seed(0)
    sizes = torch.tensor([3, 5, 9])
    batch = torch.repeat_interleave(torch.arange(3), sizes)
    space = PointCloudSpace(batch, 3, pos_dims=3)
    proc = VPSDE()
    s2 = 0.5

    def score(x, t):  # target: positions N(0, s2 P) in the subspace, features N(0.2, s2)
        alpha, sigma = proc.marginal(t)
        var = space.expand(alpha**2 * s2 + sigma**2, x)
        mean = torch.cat([torch.zeros_like(x[:, :3]), 0.2 * space.expand(alpha, x).expand(-1, 2)], 1)
        return space.project(-(x - mean) / var)

    model = Denoiser(score, proc, kind="score", space=space)
    g = torch.Generator().manual_seed(0)
    x = proc.prior_sample(torch.zeros(len(batch), 5, dtype=torch.float64), space, g)
    ts = time_grid(proc, 50, dtype=torch.float64)
    out = get_sampler(sampler)(model, x, ts, generator=g, progress=False, **SAMPLER_KW[sampler])
    assert space.com(out).abs().max() < 1e-6
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("proc_name", ["vp", "ve"])
def test_edm_heun_on_the_karras_grid_is_second_order(proc_name):
    """Deterministic EDM sampler (``s_churn = 0``) on Karras grids against the exact flow map: the error falls
    like ``N^-2`` (it is Heun in the noise level, where the ODE of a Gaussian target is smooth)."""
    proc = PROCESSES[proc_name]
    target = GaussianTarget(proc, MU, S2)
    x1 = target.sample(1.0, 256, torch.Generator().manual_seed(0))
    errs = []
    for steps in (20, 40, 80):
        ts = time_grid(proc, steps, spacing="karras", dtype=torch.float64)
        x = get_sampler("heun_churn")(target.denoiser(), x1, ts, progress=False, denoise=False)
        errs.append((x - target.flow_map(x1, float(ts[-1]))).abs().max().item())
    rates = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert all(r > 1.7 for r in rates), (errs, rates)


def test_karras_grid_is_rho_spaced_in_the_noise_level():
    proc = PROCESSES["vp"]
    ts = time_grid(proc, 10, spacing="karras", rho=7.0, dtype=torch.float64)
    assert ts[0] == 1.0 and ts[-1] == pytest.approx(proc.t_min) and (ts.diff() < 0).all()
    r = proc.noise_level(ts) ** (1 / 7)
    assert torch.allclose(r.diff(), r.diff().mean().expand(10), rtol=1e-6)
    with pytest.raises(ValueError, match="spacing"):
        time_grid(proc, 10, spacing="log")
