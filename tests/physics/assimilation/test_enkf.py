import math

import pytest
import torch

from physics.assimilation.enkf import (
    FilterResult,
    enkf_analysis,
    etkf_analysis,
    gaspari_cohn,
    grid_localization,
    kalman_analysis,
    kalman_filter,
    obs_localization,
    random_mean_preserving_rotation,
    ring_localization,
    run_filter,
)
from physics.assimilation import enkf
from physics.fields.lorenz import get_lorenz

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_problem(seed: int = 0, d: int = 5, m: int = 10, p: int = 3):
    """A correlated forecast ensemble [M, D], a dense H [P, D], y [P] and a per-observation std [P]."""
    g = _gen(seed)
    ens = torch.randn(m, d, generator=g, dtype=F64) @ torch.randn(d, d, generator=g, dtype=F64) + 3.0
    H = torch.randn(p, d, generator=g, dtype=F64)
    y = torch.randn(p, generator=g, dtype=F64) + 3.0
    std = torch.linspace(0.5, 2.0, p, dtype=F64)
    return ens, H, y, std


def _linear_model():
    """D = 4 linear dynamics (two damped/amplified rotations, coupled), process noise Q, 2 observed components."""
    c, s = math.cos(0.3), math.sin(0.3)
    rot = torch.tensor([[c, -s], [s, c]], dtype=F64)
    F = torch.zeros(4, 4, dtype=F64)
    F[:2, :2] = 0.98 * rot
    F[2:, 2:] = 1.02 * rot.T
    F[0, 2] = 0.3
    H = torch.zeros(2, 4, dtype=F64)
    H[0, 0] = H[1, 2] = 1.0
    return F, 0.1 * torch.eye(4, dtype=F64), H, torch.tensor([0.5, 1.0], dtype=F64)


def _twin(F, Q, H, std, num_states: int, seed: int = 0):
    g = _gen(seed)
    x = 2 * torch.randn(4, generator=g, dtype=F64)
    xs = [x]
    for _ in range(num_states - 1):
        x = F @ x + Q.sqrt() @ torch.randn(4, generator=g, dtype=F64)
        xs.append(x)
    xs = torch.stack(xs)
    return xs, xs @ H.T + std * torch.randn(num_states, H.shape[0], generator=g, dtype=F64)


# ----------------------------------------------------------------------------------------------------------------
# single analysis steps


@pytest.mark.parametrize("seed, d, m, p", [(0, 5, 10, 3), (1, 5, 10, 3), (2, 8, 4, 6), (3, 3, 30, 3)])
def test_etkf_analysis_is_the_exact_kalman_analysis_of_the_sample_prior(seed, d, m, p):
    ens, H, y, std = _random_problem(seed, d=d, m=m, p=p)  # M > P and M <= P take different code paths
    ana = etkf_analysis(ens, y, H, std)
    mean, cov = kalman_analysis(ens.mean(0), torch.cov(ens.T), y, H, std)
    assert torch.allclose(ana.mean(0), mean, atol=1e-10, rtol=0)
    assert torch.allclose(torch.cov(ana.T), cov, atol=1e-10, rtol=0)
    # deterministic, and a batch of problems gives the same answers
    shift = torch.arange(ens.shape[1], dtype=F64)
    batch = etkf_analysis(torch.stack([ens, ens + shift]), torch.stack([y, y + H @ shift]), H, std)
    assert torch.allclose(batch[0], ana, atol=1e-10)  # batched vs single: sums in another order on some CPUs' kernels (~1e-12 in float64); bugs are >> 1e-10
    assert torch.allclose(batch[1], ana + shift, atol=1e-10)
    # the transform is Hunt et al.'s symmetric square root, written out with an eigendecomposition
    m = ens.shape[0]
    X = ens - ens.mean(0)
    Y = X @ H.T / std
    evals, Q = torch.linalg.eigh((m - 1) * torch.eye(m, dtype=F64) + Y @ Y.T)
    W = math.sqrt(m - 1) * Q @ torch.diag(evals.rsqrt()) @ Q.T
    assert torch.allclose(ana - ana.mean(0), W.T @ X, atol=1e-10)
    assert torch.allclose(W.sum(0), torch.ones(m, dtype=F64), atol=1e-12)  # mean-preserving


def test_letkf_with_unit_weights_is_the_etkf_and_ignores_zero_weight_obs():
    ens, H, y, std = _random_problem(2)
    d, p = ens.shape[1], H.shape[0]
    full = etkf_analysis(ens, y, H, std)
    local = etkf_analysis(ens, y, H, std, localization=torch.ones(d, p, dtype=F64))
    assert torch.allclose(local, full, atol=1e-12)
    # weight 0 on the last observation for every variable == not observing it
    rho = torch.ones(d, p, dtype=F64)
    rho[:, -1] = 0
    assert torch.allclose(etkf_analysis(ens, y, H, std, localization=rho),
                          etkf_analysis(ens, y[:-1], H[:-1], std[:-1]), atol=1e-12)
    # no observation at all for a variable: it keeps its forecast members
    rho = torch.ones(d, p, dtype=F64)
    rho[1] = 0
    assert torch.allclose(etkf_analysis(ens, y, H, std, localization=rho)[:, 1], ens[:, 1], atol=1e-12)


def test_random_rotation_is_orthogonal_mean_preserving_and_keeps_the_etkf_moments():
    Q = random_mean_preserving_rotation(7, _gen(0), batch_shape=(3,))
    eye = torch.eye(7, dtype=F64)
    assert torch.allclose(Q @ Q.transpose(1, 2), eye.expand(3, -1, -1), atol=1e-12)
    assert torch.allclose(Q.sum(-1), torch.ones(3, 7, dtype=F64), atol=1e-12)
    assert torch.equal(Q, random_mean_preserving_rotation(7, _gen(0), batch_shape=(3,)))
    ens, H, y, std = _random_problem(6)
    plain = etkf_analysis(ens, y, H, std)
    rotated = etkf_analysis(ens, y, H, std, rotate=True, generator=_gen(1))
    assert not torch.allclose(rotated, plain)
    assert torch.allclose(rotated.mean(0), plain.mean(0), atol=1e-10)
    assert torch.allclose(torch.cov(rotated.T), torch.cov(plain.T), atol=1e-10)
    with pytest.raises(ValueError, match="Generator"):
        etkf_analysis(ens, y, H, std, rotate=True)


def test_stochastic_enkf_analysis_is_the_kalman_analysis_in_expectation():
    ens, H, y, std = _random_problem(3, m=8)
    mean, cov = kalman_analysis(ens.mean(0), torch.cov(ens.T), y, H, std)
    n = 20_000  # independent perturbed-observation draws of the same forecast ensemble, as one batch
    ana = enkf_analysis(ens.expand(n, -1, -1), y, H, std, generator=_gen(4))
    means = ana.mean(1)  # [n, D]
    anom = ana - ana.mean(1, keepdim=True)
    covs = anom.transpose(1, 2) @ anom / (ens.shape[0] - 1)  # [n, D, D]
    for est, ref in ((means, mean), (covs, cov)):
        se = est.std(0) / math.sqrt(n)
        assert ((est.mean(0) - ref).abs() < 5 * se + 1e-12).all()


def test_enkf_with_unit_taper_equals_no_localization():
    ens, H, y, std = _random_problem(5)
    d = ens.shape[1]
    plain = enkf_analysis(ens, y, H, std, generator=_gen(7))
    tapered = enkf_analysis(ens, y, H, std, generator=_gen(7), localization=torch.ones(d, d, dtype=F64))
    assert torch.allclose(plain, tapered, atol=1e-12)
    assert not torch.allclose(plain, enkf_analysis(ens, y, H, std, generator=_gen(8)))


# ----------------------------------------------------------------------------------------------------------------
# cycling on a linear-Gaussian model against the exact Kalman filter


def test_etkf_cycles_exactly_like_the_kalman_filter_without_model_noise():
    F, _, H, std = _linear_model()
    xs, ys = _twin(F, torch.zeros(4, 4, dtype=F64), H, std, num_states=12)
    ens0 = xs[0] + 2 * torch.randn(6, 4, generator=_gen(1), dtype=F64)
    obs = {k: ys[k] for k in range(0, 12, 2)}  # every other state, state 0 included
    res = run_filter(lambda e, dt: e @ F.T, ens0, obs, H, std, interval=1.0, num_states=12, method="etkf",
                     keep_ensemble=True)
    km, kc = kalman_filter(ens0.mean(0), torch.cov(ens0.T), F, obs, H, std, num_states=12)
    assert torch.allclose(res.mean, km, atol=1e-10, rtol=0)
    covs = torch.stack([torch.cov(e.T) for e in res.ensemble])
    assert torch.allclose(covs, kc, atol=1e-10, rtol=0)
    assert torch.allclose(res.spread, torch.diagonal(kc, dim1=1, dim2=2).mean(1).sqrt(), atol=1e-10)


@pytest.mark.parametrize("method", ["enkf", "etkf"])
def test_large_ensemble_filters_agree_with_the_kalman_filter(method):
    F, Q, H, std = _linear_model()
    T, M = 8, 2000
    _, ys = _twin(F, Q, H, std, num_states=T)
    m0, c0 = torch.zeros(4, dtype=F64), 4 * torch.eye(4, dtype=F64)
    km, kc = kalman_filter(m0, c0, F, (torch.arange(T), ys), H, std, num_states=T, process_cov=Q)
    g = _gen(11)
    q_chol = torch.linalg.cholesky(Q)

    def advance(ens, _duration):
        return ens @ F.T + torch.randn(ens.shape, generator=g, dtype=F64) @ q_chol.T

    ens0 = m0 + torch.randn(M, 4, generator=g, dtype=F64) @ torch.linalg.cholesky(c0).T
    res = run_filter(advance, ens0, (torch.arange(T), ys), H, std, interval=1.0, num_states=T, method=method,
                     generator=g, keep_ensemble=True)
    # Monte Carlo tolerances: the ensemble mean has variance ~ diag(P)/M (about twice that for the stochastic
    # EnKF, whose perturbed observations add K R K^T / M); a sample covariance entry has variance
    # (P_ii P_jj + P_ij^2) / M.
    var = torch.diagonal(kc, dim1=1, dim2=2)
    noise = 2.0 if method == "enkf" else 1.0
    assert ((res.mean - km).abs() < 5 * (noise * var / M).sqrt()).all()
    covs = torch.stack([torch.cov(e.T) for e in res.ensemble])
    cov_se = ((var[:, :, None] * var[:, None, :] + kc**2) / M).sqrt()
    assert ((covs - kc).abs() < 5 * cov_se).all()


# ----------------------------------------------------------------------------------------------------------------
# Lorenz smoke tests


def _lorenz_twin(name: str, num_states: int, interval: float, obs_std: float, seed: int = 0):
    system = get_lorenz(name)
    g = _gen(seed)
    x0 = system.advance(system.random_state(1, g, dtype=F64)[0], 10.0)
    truth = system.trajectory(x0, num_states, interval)
    ys = truth + obs_std * torch.randn(truth.shape, generator=g, dtype=F64)
    return system, truth, ys


@pytest.mark.parametrize("method", ["enkf", "etkf"])
def test_lorenz63_filter_tracks_the_truth(method):
    system, truth, ys = _lorenz_twin("lorenz63", num_states=160, interval=0.25, obs_std=math.sqrt(2.0))
    g = _gen(1)
    ens0 = system.advance(system.random_state(20, g, dtype=F64), 5.0)  # a climatological ensemble
    H = torch.eye(3, dtype=F64)
    res = run_filter(system.advance, ens0, (torch.arange(160), ys), H, math.sqrt(2.0), interval=0.25,
                     num_states=160, method=method, inflation=1.05, generator=g)
    clim_std = truth.std(0).pow(2).mean().sqrt()  # ~8
    err = (res.mean[40:] - truth[40:]).pow(2).mean(-1).sqrt().mean()
    assert err < 0.15 * clim_std  # ~0.6-0.8 expected against ~8; the observation error alone is 1.41
    assert err < math.sqrt(2.0)
    assert 0.3 * err < res.spread[40:].mean() < 3 * err


@pytest.mark.parametrize("method", ["enkf", "etkf"])
def test_localized_filters_on_lorenz96_with_small_ensemble(method):
    system, truth, ys = _lorenz_twin("lorenz96", num_states=200, interval=0.05, obs_std=1.0)
    g = _gen(2)
    ens0 = truth[0] + torch.randn(10, 40, generator=g, dtype=F64)  # M = 10 < D: needs localisation
    H = torch.eye(40, dtype=F64)
    res = run_filter(system.advance, ens0, (torch.arange(200), ys), H, 1.0, interval=0.05, num_states=200,
                     method=method, inflation=1.05, localization=ring_localization(40, 4.0), generator=g)
    err = (res.mean[100:] - truth[100:]).pow(2).mean(-1).sqrt().mean()
    assert err < 0.4  # climatological std ~3.6, observation error 1


# ----------------------------------------------------------------------------------------------------------------
# run_filter bookkeeping


def test_run_filter_shapes_schedule_and_batched_inflation():
    F, _, H, std = _linear_model()
    ens0 = torch.randn(3, 5, 4, generator=_gen(0), dtype=F64)  # 3 independent filters of 5 members
    ys = torch.randn(2, 2, generator=_gen(1), dtype=F64)
    res = run_filter(lambda e, dt: e @ F.T, ens0, (torch.tensor([2, 4]), ys), H, std, interval=0.5, num_states=6,
                     method="etkf", inflation=torch.tensor([1.0, 1.1, 1.2], dtype=F64), keep_ensemble=True)
    assert isinstance(res, FilterResult)
    assert res.mean.shape == (3, 6, 4) and res.spread.shape == (3, 6) and res.ensemble.shape == (3, 6, 5, 4)
    assert res.observed.tolist() == [False, False, True, False, True, False]
    unobs = ~res.observed
    assert torch.equal(res.mean[:, unobs], res.forecast_mean[:, unobs])
    assert torch.equal(res.mean[:, 0], ens0.mean(1))
    # filter b alone, with its own inflation, gives the same answer as inside the batch
    for b, infl in enumerate([1.0, 1.1, 1.2]):
        alone = run_filter(lambda e, dt: e @ F.T, ens0[b], {2: ys[0], 4: ys[1]}, H, std, interval=0.5,
                           num_states=6, method="etkf", inflation=infl)
        assert torch.allclose(alone.mean, res.mean[b], atol=1e-10)  # batched vs single: sums in another order on some CPUs' kernels (~1e-12 in float64); bugs are >> 1e-10


def test_batched_letkf_localization_matches_single_runs():
    system, truth, ys = _lorenz_twin("lorenz96", num_states=6, interval=0.05, obs_std=1.0)
    H = torch.eye(40, dtype=F64)[::2]  # every other variable
    ens0 = truth[0] + torch.randn(8, 40, generator=_gen(3), dtype=F64)
    radii = [2.0, 5.0]
    taper = torch.stack([ring_localization(40, r) for r in radii])
    kw = dict(interval=0.05, num_states=6, method="etkf", inflation=1.03)
    batched = run_filter(system.advance, ens0.expand(2, -1, -1), (torch.arange(6), ys[:, ::2]), H, 1.0,
                         localization=taper, **kw)
    for b in range(2):
        alone = run_filter(system.advance, ens0, (torch.arange(6), ys[:, ::2]), H, 1.0, localization=taper[b], **kw)
        assert torch.allclose(batched.mean[b], alone.mean, atol=1e-10)


def test_run_filter_is_reproducible_with_a_generator():
    F, _, H, std = _linear_model()
    ens0 = torch.randn(6, 4, generator=_gen(0), dtype=F64)
    ys = torch.randn(3, 2, generator=_gen(1), dtype=F64)
    seen = []
    runs = [run_filter(lambda e, dt: e @ F.T, ens0, (torch.arange(3), ys), H, std, interval=1.0, num_states=3,
                       method="enkf", generator=_gen(5), callback=lambda k, e: seen.append(k)) for _ in range(2)]
    assert torch.equal(runs[0].mean, runs[1].mean)
    assert seen == [0, 1, 2, 0, 1, 2]


# ----------------------------------------------------------------------------------------------------------------
# localisation tapers


def test_gaspari_cohn_values_and_continuity():
    c = 2.0
    d = torch.tensor([0.0, c, 2 * c, 2.5 * c, -c], dtype=F64)
    v = gaspari_cohn(d, c)
    assert v[0] == 1.0 and v[2] == 0.0 and v[3] == 0.0
    assert v[1].item() == pytest.approx(5.0 / 24.0)  # 1 - 5/3 + 5/8 + 1/2 - 1/4 at r = 1
    assert v[4] == v[1]
    for r in (c, 2 * c):  # continuous across the two knots
        left, right = gaspari_cohn(torch.tensor([r - 1e-7, r + 1e-7], dtype=F64), c)
        assert abs(left - right) < 1e-6
    curve = gaspari_cohn(torch.linspace(0, 2 * c, 200, dtype=F64), c)
    assert (curve.diff() <= 1e-15).all() and (curve >= 0).all()
    assert torch.equal(gaspari_cohn(torch.tensor([0.0, 1.0]), 0.0), torch.tensor([1.0, 0.0]))


def test_ring_localization_is_a_periodic_correlation_matrix():
    rho = ring_localization(40, 3.0)
    assert rho.shape == (40, 40) and rho.dtype == F64
    assert torch.equal(rho, rho.T) and (rho.diagonal() == 1).all()
    assert torch.allclose(rho[0, 1], rho[0, 39]) and rho[0, 20] == 0
    assert torch.equal(rho[5], torch.roll(rho[0], 5))
    assert torch.linalg.eigvalsh(rho).min() > -1e-10


def test_grid_localization_uses_periodic_euclidean_distances():
    rho = grid_localization((6, 8), 2.0)
    assert rho.shape == (48, 48) and torch.equal(rho, rho.T) and (rho.diagonal() == 1).all()
    at = lambda i, j: 8 * i + j  # noqa: E731 -- row-major index of grid point (i, j)
    d = lambda *r: gaspari_cohn(torch.tensor(math.hypot(*r), dtype=F64), 2.0)  # noqa: E731
    assert rho[at(0, 0), at(0, 7)] == d(1) and rho[at(0, 0), at(5, 0)] == d(1)  # wrapped neighbours
    assert torch.allclose(rho[at(0, 0), at(1, 1)], d(1, 1)) and torch.allclose(rho[at(2, 3), at(5, 7)], d(3, 4))
    assert rho[at(0, 0), at(3, 4)] == 0  # distance 5 > 2c
    assert torch.linalg.eigvalsh(rho).min() > -1e-10  # a correlation matrix on the torus
    assert torch.equal(grid_localization((40,), 3.0), ring_localization(40, 3.0))
    assert torch.equal(grid_localization((3, 4), math.inf), torch.ones(12, 12, dtype=F64))
    with pytest.raises(ValueError, match="shape"):
        grid_localization((0, 4), 1.0)


def _grid_model(n: int = 4):
    """A linear model on an n x n periodic grid: x <- 0.9 x + 0.05 * (sum of the 4 neighbours), observed as 2 x 2
    block means (the coarse setting's operator in miniature) with noise std 0.3."""
    idx = torch.arange(n * n).reshape(n, n)
    F = 0.9 * torch.eye(n * n, dtype=F64)
    for shift, dim in ((1, 0), (-1, 0), (1, 1), (-1, 1)):
        F[idx.flatten(), torch.roll(idx, shift, dim).flatten()] += 0.05
    H = torch.zeros((n // 2) ** 2, n * n, dtype=F64)
    for b, (i, j) in enumerate((i, j) for i in range(0, n, 2) for j in range(0, n, 2)):
        H[b, idx[i : i + 2, j : j + 2].flatten()] = 0.25
    return F, H, 0.3


def test_letkf_with_infinite_radius_cycles_exactly_like_the_kalman_filter():
    F, H, std = _grid_model()
    g = _gen(3)
    truth = torch.randn(16, generator=g, dtype=F64)
    obs = {}
    for k in range(10):
        if k % 2 == 0:
            obs[k] = H @ truth + std * torch.randn(H.shape[0], generator=g, dtype=F64)
        truth = F @ truth
    ens0 = torch.randn(24, 16, generator=g, dtype=F64) @ torch.randn(16, 16, generator=g, dtype=F64) / 4
    res = run_filter(lambda e, dt: e @ F.T, ens0, obs, H, std, interval=1.0, num_states=10, method="etkf",
                     localization=grid_localization((4, 4), math.inf), keep_ensemble=True)
    km, kc = kalman_filter(ens0.mean(0), torch.cov(ens0.T), F, obs, H, std, num_states=10)
    assert torch.allclose(res.mean, km, atol=1e-10, rtol=0)
    assert torch.allclose(torch.stack([torch.cov(e.T) for e in res.ensemble]), kc, atol=1e-10, rtol=0)


def test_letkf_tends_to_the_etkf_as_the_radius_grows():
    F, H, std = _grid_model(6)
    g = _gen(4)
    ens = torch.randn(8, 36, generator=g, dtype=F64)
    y = torch.randn(H.shape[0], generator=g, dtype=F64)
    global_ = etkf_analysis(ens, y, H, std)
    gaps = [float((etkf_analysis(ens, y, H, std, localization=obs_localization(grid_localization((6, 6), r), H))
                   - global_).abs().max()) for r in (1.0, 3.0, 10.0, 1e3, 1e6)]
    assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[0] > 0.1 and gaps[-1] < 1e-8  # 1 - taper(d) ~ (5/3) (d / c)^2 ~ 1e-10 at c = 1e6


def test_letkf_in_chunks_of_variables_is_the_same_analysis(monkeypatch):
    F, H, std = _grid_model(6)
    g = _gen(5)
    ens = torch.randn(2, 8, 36, generator=g, dtype=F64)  # two independent filters
    y = torch.randn(2, H.shape[0], generator=g, dtype=F64)
    rho = obs_localization(grid_localization((6, 6), 2.0), H)
    whole = etkf_analysis(ens, y, H, std, localization=rho)
    monkeypatch.setattr(enkf, "LETKF_CHUNK_ELEMENTS", 2 * 8 * 9 * 5)  # 5 variables at a time, a ragged last chunk
    assert torch.allclose(etkf_analysis(ens, y, H, std, localization=rho), whole, atol=1e-12, rtol=0)


def test_obs_localization_selects_columns_and_averages_blocks():
    rho = ring_localization(8, 1.5)
    H = torch.zeros(3, 8, dtype=F64)
    H[0, 2] = 1.0
    H[1, 5] = 1.0
    H[2, 0:2] = 0.5  # an average of variables 0 and 1
    loc = obs_localization(rho, H)
    assert loc.shape == (8, 3)
    assert torch.equal(loc[:, 0], rho[:, 2]) and torch.equal(loc[:, 1], rho[:, 5])
    assert torch.allclose(loc[:, 2], 0.5 * (rho[:, 0] + rho[:, 1]))


# ----------------------------------------------------------------------------------------------------------------
# errors


def test_bad_inputs_raise_clear_errors():
    ens, H, y, std = _random_problem(0)
    g = _gen(0)
    with pytest.raises(ValueError, match="D = 5"):
        enkf_analysis(ens, y, H[:, :4], std, generator=g)
    with pytest.raises(ValueError, match=r"\[\.\.\., P\]"):
        etkf_analysis(ens, y[:2], H, std)
    bad = y.clone()
    bad[1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        enkf_analysis(ens, bad, H, std, generator=g)
    with pytest.raises(ValueError, match="non-finite"):
        etkf_analysis(ens, bad, H, std)
    with pytest.raises(ValueError, match="at least 2 members"):
        etkf_analysis(ens[:1], y, H, std)
    with pytest.raises(ValueError, match="obs_std"):
        etkf_analysis(ens, y, H, std[:2])
    with pytest.raises(ValueError, match="obs_std"):
        etkf_analysis(ens, y, H, -1.0)
    with pytest.raises(ValueError, match="localization"):
        enkf_analysis(ens, y, H, std, generator=g, localization=torch.ones(3, 3))
    with pytest.raises(ValueError, match="localization"):
        etkf_analysis(ens, y, H, std, localization=torch.ones(5, 5))

    step = lambda e, dt: e  # noqa: E731
    with pytest.raises(ValueError, match="outside the states"):
        run_filter(step, ens, {7: y}, H, std, interval=1.0, num_states=5, method="etkf")
    with pytest.raises(ValueError, match="non-finite"):
        run_filter(step, ens, {1: bad}, H, std, interval=1.0, num_states=5, method="etkf")
    with pytest.raises(ValueError, match="Generator"):
        run_filter(step, ens, {1: y}, H, std, interval=1.0, num_states=5, method="enkf")
    with pytest.raises(ValueError, match="method"):
        run_filter(step, ens, {1: y}, H, std, interval=1.0, num_states=5, method="3dvar")
    with pytest.raises(ValueError, match="rotate"):
        run_filter(step, ens, {1: y}, H, std, interval=1.0, num_states=5, method="enkf", rotate=True, generator=g)
    with pytest.raises(ValueError, match="rows"):
        run_filter(step, ens, (torch.tensor([0, 1]), y[None]), H, std, interval=1.0, num_states=5, method="etkf")
