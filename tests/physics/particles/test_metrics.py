"""Particle metrics on cases with known answers (and smoke tests of the particle figures)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import ot
import pytest
import torch
from matplotlib.figure import Figure

from physics.particles.metrics import (
    importance_estimate,
    ParticleMetrics,
    distance_histogram_tv,
    distance_wasserstein,
    effective_sample_size,
    energy_wasserstein,
    importance_log_weights,
    interatomic_distances,
    mean_nll,
    nonfinite_fraction,
    particle_metrics,
)
from physics.particles.plots import distance_histogram, energy_histogram, particle_grid


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- energy Wasserstein


@pytest.mark.parametrize("p", [1, 2])
def test_wasserstein_of_a_shift_is_the_shift(p):
    e = _rng().normal(size=300)
    assert energy_wasserstein(e + 0.7, e, p) == pytest.approx(0.7, abs=1e-12)
    assert energy_wasserstein(e, e - 2.5, p) == pytest.approx(2.5, abs=1e-12)
    assert energy_wasserstein(e, np.random.default_rng(1).permutation(e), p) == pytest.approx(0.0, abs=1e-15)


def test_wasserstein_accepts_torch_and_unequal_sizes():
    e = torch.arange(4, dtype=torch.float32)
    # {0,1,2,3} vs {0,3}: quantiles 0,0 vs 0,1 ... -> |0-0|+|1-0|+|2-3|+|3-3| over 4 = 0.5
    assert energy_wasserstein(e, np.array([0.0, 3.0]), 1) == pytest.approx(0.5)
    assert energy_wasserstein(e, np.array([0.0, 3.0]), 2) == pytest.approx(math.sqrt(0.5))


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("sizes", [(7, 7), (5, 9), (13, 4), (1, 6)])
def test_wasserstein_equals_ot_emd2(p, sizes):
    rng = _rng(sum(sizes) + p)
    for _ in range(5):
        u, v = rng.normal(size=sizes[0]) * 2, rng.standard_cauchy(size=sizes[1])
        cost = np.abs(u[:, None] - v[None, :]) ** p
        ref = ot.emd2(np.full(len(u), 1 / len(u)), np.full(len(v), 1 / len(v)), cost) ** (1 / p)
        assert energy_wasserstein(u, v, p) == pytest.approx(ref, rel=1e-10, abs=1e-12)
        assert energy_wasserstein(u, v, p) == pytest.approx(ot.wasserstein_1d(u, v, p=p) ** (1 / p), rel=1e-10)


def test_w2_of_gaussians_with_different_scales():
    rng = _rng(3)
    for s in (0.5, 2.0):
        a, b = rng.normal(size=200_000), s * rng.normal(size=200_000)
        # W2(N(0,1), N(0,s^2)) = |1 - s|
        assert energy_wasserstein(a, b, 2) == pytest.approx(abs(1 - s), abs=0.02)


def test_nonfinite_model_energies_are_dropped_and_counted():
    e_ref = np.arange(10.0)
    e = np.concatenate([np.arange(10.0) + 1.0, [np.inf, np.nan]])
    assert energy_wasserstein(e, e_ref, 1) == pytest.approx(1.0)
    assert energy_wasserstein(e, e_ref, 1, nonfinite="inf") == math.inf
    assert nonfinite_fraction(e) == pytest.approx(2 / 12)
    assert energy_wasserstein([np.nan, np.inf], e_ref) == math.inf
    with pytest.raises(ValueError, match="reference"):
        energy_wasserstein(e_ref, e)
    with pytest.raises(ValueError):
        energy_wasserstein([], e_ref)


# ---------------------------------------------------------------- distances


def test_distances_of_unit_square():
    sq = np.array([[[0, 0], [1, 0], [1, 1], [0, 1]]], dtype=np.float64)
    d = interatomic_distances(sq)
    assert isinstance(d, np.ndarray) and d.shape == (1, 6)
    assert sorted(d[0]) == pytest.approx([1, 1, 1, 1, math.sqrt(2), math.sqrt(2)])
    # pair order (0,1), (0,2), (0,3), (1,2), (1,3), (2,3)
    assert d[0] == pytest.approx([1, math.sqrt(2), 1, 1, math.sqrt(2), 1])
    # 3D, torch in -> torch out, differentiable, translation invariant, chunked the same
    x = torch.tensor(np.concatenate([sq, np.zeros((1, 4, 1))], axis=2) + 5.0, requires_grad=True)
    dt = interatomic_distances(x.expand(3, 4, 3), chunk=2)
    assert isinstance(dt, torch.Tensor) and dt.shape == (3, 6)
    assert dt.detach().numpy() == pytest.approx(np.repeat(d, 3, axis=0))
    dt.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_distance_tv_known_values():
    rng = _rng(4)
    x = rng.normal(size=(50, 5, 3))
    assert distance_histogram_tv(x, x) == 0.0
    assert distance_histogram_tv(x[rng.permutation(50)], x) == pytest.approx(0.0, abs=1e-15)
    # the same set twice is the same distribution
    assert distance_histogram_tv(np.concatenate([x, x]), x) == pytest.approx(0.0, abs=1e-15)
    # disjoint supports: scaled far apart -> TV 1 (model distances land in the overflow bin)
    assert distance_histogram_tv(100 * x, x) == pytest.approx(1.0)
    # disjoint within range: explicit range/bins
    a = np.array([[[0.0, 0.0], [1.0, 0.0]]])
    b = np.array([[[0.0, 0.0], [3.0, 0.0]]])
    assert distance_histogram_tv(a, b, bins=4, range=(0.0, 4.0)) == pytest.approx(1.0)
    assert distance_histogram_tv(np.concatenate([a, b]), b, bins=4, range=(0.0, 4.0)) == pytest.approx(0.5)
    assert distance_histogram_tv(a, b, bins=np.array([0.0, 2.0, 4.0])) == pytest.approx(1.0)


def test_distance_wasserstein_analytic():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 5, 3))
    d2 = interatomic_distances(x) ** 2
    assert distance_wasserstein(x, x) == pytest.approx(0.0, abs=1e-12)
    assert distance_wasserstein(x[rng.permutation(40)], x) == pytest.approx(0.0, abs=1e-12)
    # scaling every configuration by s scales every distance, and the sorted coupling pairs d with s d
    assert distance_wasserstein(1.3 * x, x) == pytest.approx(0.3 * np.sqrt(d2.mean()), rel=1e-10)
    assert distance_wasserstein(torch.as_tensor(1.3 * x), x, 1) == pytest.approx(0.3 * np.sqrt(d2).mean(), rel=1e-10)
    y = 1.3 * x
    y[0, 0, 0] = np.nan  # left out, like a non-finite energy
    assert distance_wasserstein(y, x) == pytest.approx(distance_wasserstein(1.3 * x[1:], x), rel=1e-12)
    assert distance_wasserstein(np.full_like(x, np.nan), x) == np.inf
    with pytest.raises(ValueError, match="non-finite"):
        distance_wasserstein(x, y)


def test_distance_tv_counts_nonfinite_model_samples():
    rng = _rng(5)
    x = rng.normal(size=(10, 4, 2))
    y = x.copy()
    y[:5] = np.nan
    assert distance_histogram_tv(y, x) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="reference"):
        distance_histogram_tv(x, y)


# ---------------------------------------------------------------- ESS, log-weights, NLL


def test_ess_known_values():
    n = 1000
    assert effective_sample_size(np.zeros(n)) == pytest.approx(1.0)
    one_hot = np.full(n, -np.inf)
    one_hot[17] = 3.0
    assert effective_sample_size(one_hot) == pytest.approx(1 / n)
    lw = _rng(6).normal(size=n) * 2
    ess = effective_sample_size(lw)
    assert 1 / n < ess < 1
    assert effective_sample_size(lw + 1234.5) == pytest.approx(ess, rel=1e-12)
    assert effective_sample_size(lw - 1e5) == pytest.approx(ess, rel=1e-12)  # no underflow
    w = np.exp(lw)
    assert ess == pytest.approx(w.sum() ** 2 / (n * (w**2).sum()), rel=1e-12)


def test_ess_nonfinite_weights_are_zero():
    lw = np.array([0.0, 0.0, np.nan, -np.inf])
    # two equal weights among four samples: (2)^2 / (4 * 2) = 0.5
    assert effective_sample_size(lw) == pytest.approx(0.5)
    assert effective_sample_size(torch.tensor([np.nan, -np.inf])) == 0.0
    with pytest.raises(ValueError):
        effective_sample_size([])


def test_importance_estimate_on_log_normal_weights():
    """log w ~ N(0, s^2): ESS -> exp(-s^2) and log Z -> s^2 / 2 as n grows; both within a few bootstrap errors,
    which shrink like 1 / sqrt(n)."""
    s = 0.6
    rng = np.random.default_rng(0)
    est = {}
    for n in (2_000, 20_000):
        est[n] = importance_estimate(rng.normal(0.0, s, n), n_boot=300, generator=np.random.default_rng(1))
        assert abs(est[n].ess - math.exp(-s * s)) < 4 * est[n].ess_se + 2 / n
        assert abs(est[n].log_z - s * s / 2) < 4 * est[n].log_z_se
    assert est[20_000].ess_se < 0.5 * est[2_000].ess_se
    flat = importance_estimate(np.full(50, 3.0), n_boot=10, generator=np.random.default_rng(0))
    assert flat.ess == 1.0 and flat.ess_se == 0.0 and flat.log_z == pytest.approx(3.0) and flat.log_z_se == 0.0
    with pytest.raises(ValueError):
        importance_estimate(np.zeros(0), generator=np.random.default_rng(0))


def test_ess_of_a_flow_that_is_exactly_the_target_is_one():
    """Point clouds N(0, s2 P) on the zero-CoM subspace and the exact probability-flow velocity: samples and their
    log q from one ODE pass with the exact divergence, reweighted to the analytic target -> ESS = 1 within its
    error bar (the ODE's discretisation error only)."""
    from moldiff.diffusion import Denoiser, PointCloudSpace, sample_with_log_likelihood
    from moldiff.diffusion.processes import FlowPath

    proc = FlowPath()
    n, B, s2 = 5, 400, 0.5
    batch = torch.arange(B).repeat_interleave(n)
    space = PointCloudSpace(batch, B, pos_dims=3)

    def velocity(x, t):  # x_t = (1 - t) x0 + t z with x0 ~ N(0, s2), z ~ N(0, 1): the marginal flow is linear in x
        var = (1 - t) ** 2 * s2 + t**2
        dvar = -2 * (1 - t) * s2 + 2 * t
        return space.project(x * space.expand(0.5 * dvar / var, x))

    model = Denoiser(velocity, proc, kind="velocity", space=space)
    z = space.randn_like(torch.zeros(B * n, 3, dtype=torch.float64), torch.Generator().manual_seed(0))
    res = sample_with_log_likelihood(model, z, method="heun", steps=50)
    dof = space.dof(res.x)
    log_p = -0.5 * space.sum(res.x**2) / s2 - 0.5 * dof * math.log(2 * math.pi * s2)
    est = importance_estimate((log_p - res.logp).numpy(), n_boot=200, generator=np.random.default_rng(0))
    assert est.ess > 1 - max(3 * est.ess_se, 1e-4)


def test_importance_log_weights():
    neg_u = np.array([-1.0, -2.0, -np.inf])
    log_q = np.array([0.5, -3.0, -1.0])
    assert importance_log_weights(neg_u, log_q)[:2] == pytest.approx([-1.5, 1.0])
    assert importance_log_weights(neg_u, torch.tensor(log_q))[2] == -np.inf
    # q proportional to the target: all weights equal, ESS 1
    assert effective_sample_size(importance_log_weights(-np.arange(5.0), -np.arange(5.0) - 7)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        importance_log_weights(neg_u, log_q[:2])


def test_mean_nll():
    logp = np.array([-1.0, -3.0])
    assert mean_nll(logp) == pytest.approx(2.0)
    assert mean_nll(torch.tensor(logp), n_dof=4) == pytest.approx(0.5)
    assert mean_nll([-1.0, -np.inf]) == math.inf
    assert math.isnan(mean_nll([-1.0, np.nan]))


# ---------------------------------------------------------------- collected metrics


def test_particle_metrics_dataclass():
    m = ParticleMetrics(energy_w1=0.1, energy_w2=0.2, distance_tv=0.05, n_samples=1000, frac_nonfinite=0.01,
                        ess=0.3, nfe=100)
    d = m.as_dict()
    assert d == {"energy/w1": 0.1, "energy/w2": 0.2, "distance/tv": 0.05, "ess": 0.3, "nfe": 100.0,
                 "n_samples": 1000.0, "frac_nonfinite": 0.01}
    assert set(m.as_dict("lj13/")) == {"lj13/" + k for k in d}
    row = m.table("flow")
    assert row.startswith("| flow | 0.1 | 0.2 | 0.05 | - | - | 0.3 | 100 | 1000 | 0.01 |")
    lines = m.table("flow", header=True).splitlines()
    assert len(lines) == 3 and lines[0].count("|") == lines[1].count("|") == lines[2].count("|")


def test_particle_metrics_function():
    rng = _rng(7)
    x_ref, e_ref = rng.normal(size=(200, 4, 2)), rng.normal(size=200)
    x = x_ref.copy()
    e = e_ref + 1.0
    e[0] = np.inf
    x[1] = np.nan
    m = particle_metrics(torch.tensor(x), e, x_ref, e_ref, logp=-np.ones(5), n_dof=6, log_w=np.zeros(200), nfe=20)
    assert m.n_samples == 200 and m.frac_nonfinite == pytest.approx(2 / 200)
    assert m.energy_w1 > 0.9 and m.distance_tv == pytest.approx(1 / 200, abs=1e-12)
    assert m.distance_w2 == pytest.approx(distance_wasserstein(np.delete(x, 1, 0), x_ref)) and m.distance_w2 < 0.05
    assert m.nll == pytest.approx(1 / 6) and m.ess == pytest.approx(1.0) and m.nfe == 20


# ---------------------------------------------------------------- figures (smoke tests)


def test_energy_histogram_figure():
    rng = _rng(8)
    e_ref = rng.normal(size=500)
    e_bad = np.concatenate([rng.normal(size=100), [np.nan, np.inf, 1e9]])
    fig = energy_histogram({"a": e_bad, "b": torch.tensor(rng.normal(size=50))}, e_ref)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert fig.axes[0].get_xlabel() == "energy (kT)"
    assert any("outside" in t.get_text() and "non-finite" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    plt.close(fig)
    fig = energy_histogram(np.full(10, np.nan), e_ref)  # all non-finite: no crash
    assert len(fig.axes) == 1
    plt.close(fig)


def test_distance_histogram_figure():
    rng = _rng(9)
    x_ref = rng.normal(size=(30, 4, 3))
    x = rng.normal(size=(20, 4, 3))
    x[3] = np.nan
    fig = distance_histogram({"m": x}, x_ref)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    plt.close(fig)
    fig = distance_histogram(torch.tensor(np.full((5, 4, 3), np.nan)), x_ref)
    assert len(fig.axes) == 1
    plt.close(fig)


@pytest.mark.parametrize("d", [2, 3])
def test_particle_grid_figure(d):
    x = _rng(10).normal(size=(6, 13, d))
    x[1, 2] = np.nan
    fig = particle_grid(x, title="t", cols=4)
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    if d == 3:
        assert all(ax.name == "3d" for ax in fig.axes)
    plt.close(fig)
    fig = particle_grid(np.full((2, 4, d), np.nan))
    assert len(fig.axes) == 2
    plt.close(fig)
