"""The ensemble smoothers against the exact Kalman (RTS) smoother on a linear-Gaussian system, float64.

An ensemble whose anomalies span the state space and reproduce the prior covariance exactly is propagated
exactly by a linear model, and the square-root analyses are exact for it, so the EnKS and the iEnKS must give
the RTS means and covariances to rounding -- no statistical tolerance.  On Lorenz-63 the smoothers must beat
the filter they are built on."""

import math

import pytest
import torch

from physics.assimilation.enkf import kalman_filter, run_filter
from physics.assimilation.smoothers import etkf_transform, rts_smoother, run_enks, run_ienks
from physics.fields.lorenz import get_lorenz

D, M, T = 3, 8, 13
TIMES = [0, 3, 6, 9, 12]


def _linear_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    angle = 0.3
    F = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0],
                      [0.1, 0.0, 1.02]], dtype=torch.float64)
    H = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)  # two of three variables
    mean0 = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    L = torch.randn(D, D, generator=g, dtype=torch.float64)
    cov0 = L @ L.T + 0.5 * torch.eye(D, dtype=torch.float64)
    ys = {k: torch.randn(2, generator=g, dtype=torch.float64) * 2 for k in TIMES}
    return F, H, mean0, cov0, ys


def _exact_ensemble(mean0, cov0, m=M, seed=1):
    """``m`` members with sample mean ``mean0`` and sample covariance (``m - 1``) exactly ``cov0``."""
    g = torch.Generator().manual_seed(seed)
    Z = torch.randn(m, D, generator=g, dtype=torch.float64)
    Z = Z - Z.mean(0)
    Q, _ = torch.linalg.qr(Z)  # orthonormal columns, each orthogonal to 1
    return mean0 + math.sqrt(m - 1) * Q @ torch.linalg.cholesky(cov0).T


def _cov(ens):
    x = ens - ens.mean(-2, keepdim=True)
    return x.transpose(-1, -2) @ x / (ens.shape[-2] - 1)


def test_rts_is_the_kalman_filter_at_the_last_state_and_beats_it_elsewhere():
    F, H, mean0, cov0, ys = _linear_problem()
    fm, fc = kalman_filter(mean0, cov0, F, ys, H, 0.7, num_states=T)
    sm, sc = rts_smoother(mean0, cov0, F, ys, H, 0.7, num_states=T)
    assert torch.allclose(sm[-1], fm[-1]) and torch.allclose(sc[-1], fc[-1])
    tr_f, tr_s = torch.diagonal(fc, dim1=-2, dim2=-1).sum(-1), torch.diagonal(sc, dim1=-2, dim2=-1).sum(-1)
    assert (tr_s[:-1] < tr_f[:-1] - 1e-9).all()  # future observations shrink the uncertainty


def test_rts_against_the_joint_gaussian_posterior():
    """Without process noise the whole trajectory is a linear function of x_0: the smoother's estimate of x_0
    is the Bayesian linear-regression posterior of x_0 given every observation."""
    F, H, mean0, cov0, ys = _linear_problem()
    rows, obs = [], []
    for k in TIMES:
        rows.append(H @ torch.linalg.matrix_power(F, k))
        obs.append(ys[k])
    G, y = torch.cat(rows), torch.cat(obs)
    R = 0.49 * torch.eye(len(y), dtype=torch.float64)
    post_cov = torch.linalg.inv(torch.linalg.inv(cov0) + G.T @ torch.linalg.solve(R, G))
    post_mean = post_cov @ (torch.linalg.solve(cov0, mean0) + G.T @ torch.linalg.solve(R, y))
    sm, sc = rts_smoother(mean0, cov0, F, ys, H, 0.7, num_states=T)
    assert torch.allclose(sm[0], post_mean, atol=1e-10) and torch.allclose(sc[0], post_cov, atol=1e-10)


def test_etkf_transform_is_the_etkf_analysis():
    from physics.assimilation.enkf import etkf_analysis

    F, H, mean0, cov0, ys = _linear_problem()
    ens = _exact_ensemble(mean0, cov0)
    G = etkf_transform(ens, ys[0], H, 0.7)
    assert torch.allclose(G @ ens, etkf_analysis(ens, ys[0], H, 0.7), atol=1e-12)
    assert torch.allclose(G.sum(-1), torch.ones(M, dtype=torch.float64))  # each member an affine combination


@pytest.mark.parametrize("method", ["enks", "ienks"])
def test_ensemble_smoothers_equal_rts_on_a_linear_model(method):
    F, H, mean0, cov0, ys = _linear_problem()
    sm, sc = rts_smoother(mean0, cov0, F, ys, H, 0.7, num_states=T)
    advance = lambda e, dt: e @ F.T  # noqa: E731 - one linear step per interval
    ens0 = _exact_ensemble(mean0, cov0)
    if method == "enks":
        res = run_enks(advance, ens0, ys, H, 0.7, interval=1.0, num_states=T, keep_ensemble=True)
    else:
        res = run_ienks(advance, ens0, ys, H, 0.7, interval=1.0, num_states=T, lag=len(TIMES), keep_ensemble=True)
        assert res.iterations <= 2  # Gauss-Newton is exact in one step (the second confirms |dw| ~ 0)
    assert torch.allclose(res.mean, sm, atol=1e-9), (res.mean - sm).abs().max()
    assert torch.allclose(_cov(res.ensemble), sc, atol=1e-9)
    # the analysis means are the Kalman filter's
    fm, _ = kalman_filter(mean0, cov0, F, ys, H, 0.7, num_states=T)
    assert torch.allclose(res.analysis_mean, fm[TIMES], atol=1e-9)


def test_ienks_with_lag_0_is_the_etkf_on_a_linear_model():
    F, H, mean0, cov0, ys = _linear_problem()
    advance = lambda e, dt: e @ F.T  # noqa: E731
    ens0 = _exact_ensemble(mean0, cov0)
    res = run_ienks(advance, ens0, ys, H, 0.7, interval=1.0, num_states=T, lag=0)
    filt = run_filter(advance, ens0, ys, H, 0.7, interval=1.0, num_states=T, method="etkf")
    assert torch.allclose(res.mean, filt.mean, atol=1e-9)


def test_a_batch_of_windows_is_the_windows_one_by_one():
    F, H, mean0, cov0, ys = _linear_problem()
    advance = lambda e, dt: e @ F.T  # noqa: E731
    ens = torch.stack([_exact_ensemble(mean0, cov0, seed=s) for s in (1, 2)])
    infl = torch.tensor([1.0, 1.1], dtype=torch.float64)
    ysb = {k: torch.stack([v, -v]) for k, v in ys.items()}
    for run in (run_enks, lambda *a, **k: run_ienks(*a, lag=2, **k)):
        both = run(advance, ens, ysb, H, 0.7, interval=1.0, num_states=T, inflation=infl)
        for b in range(2):
            one = run(advance, ens[b], {k: v[b] for k, v in ysb.items()}, H, 0.7, interval=1.0, num_states=T,
                      inflation=float(infl[b]))
            assert torch.allclose(both.mean[b], one.mean, atol=1e-9)


def test_smoothers_beat_the_filter_on_lorenz63():
    """Nonlinear: 20 members, all variables observed every 5 states with noise 1.41 (the project's standard L63
    setting), 8 windows of 60 states from the attractor: RMSE over the window, smoother < filter."""
    sys = get_lorenz("lorenz63")
    g = torch.Generator().manual_seed(0)
    x0 = sys.advance(torch.randn(8, 3, generator=g, dtype=torch.float64) * 5, 10.0)
    truth = [x0]
    for _ in range(59):
        truth.append(sys.advance(truth[-1], 0.05))
    truth = torch.stack(truth, -2)  # [8, 60, 3]
    H = torch.eye(3, dtype=torch.float64)
    times = list(range(0, 60, 5))
    ys = {k: truth[:, k] + 1.41 * torch.randn(8, 3, generator=g, dtype=torch.float64) for k in times}
    clim = sys.advance(torch.randn(8, 20, 3, generator=g, dtype=torch.float64) * 5, 10.0)
    kw = dict(interval=0.05, num_states=60)
    filt = run_filter(sys.advance, clim, ys, H, 1.41, method="etkf", inflation=1.05, **kw)
    enks = run_enks(sys.advance, clim, ys, H, 1.41, inflation=1.05, **kw)
    ienks = run_ienks(sys.advance, clim, ys, H, 1.41, lag=2, inflation=1.02, **kw)
    err = lambda m: float((m[:, 15:] - truth[:, 15:]).square().mean().sqrt())  # noqa: E731 - after spin-up
    assert err(enks.mean) < err(filt.mean) and err(ienks.mean) < err(filt.mean), (
        err(filt.mean), err(enks.mean), err(ienks.mean))
    assert err(ienks.mean) < 0.9


@pytest.mark.parametrize("method", ["etkf", "enks", "ienks", "pf"])
def test_nonlinear_observation_path_with_a_linear_function_is_the_linear_method(method):
    """``obs_fn`` goes through the ensemble's observations ``g(H x_i)`` instead of ``H X``: with ``g(z) = 2 z`` and
    noise 1.4 every method must give exactly what it gives for ``H' = 2 H`` (the linear path) -- to rounding."""
    from physics.assimilation.particle import run_particle_filter

    F, H, mean0, cov0, ys = _linear_problem()
    advance = lambda e, dt: e @ F.T  # noqa: E731
    ens0 = _exact_ensemble(mean0, cov0)
    ys2 = {k: 2 * v for k, v in ys.items()}
    kw = dict(interval=1.0, num_states=T)

    def run(H_, fn):
        if method == "etkf":
            return run_filter(advance, ens0, ys2, H_, 1.4, method="etkf", inflation=1.1, obs_fn=fn, **kw).mean
        if method == "enks":
            return run_enks(advance, ens0, ys2, H_, 1.4, inflation=1.1, obs_fn=fn, **kw).mean
        if method == "ienks":
            return run_ienks(advance, ens0, ys2, H_, 1.4, lag=2, obs_fn=fn, **kw).mean
        return run_particle_filter(advance, ens0, ys2, H_, 1.4, generator=torch.Generator().manual_seed(3),
                                   jitter=0.1, obs_fn=fn, **kw).mean

    assert torch.allclose(run(H, lambda z: 2 * z), run(2 * H, None), atol=1e-9)


def test_mildly_nonlinear_observations_of_lorenz63_are_assimilated():
    """Observations ``arctan(x / 10)`` (noise 0.02: about 0.2 in state units where arctan is nearly linear) of every
    variable every 5 states: the ETKF, EnKS and iEnKS track the truth (RMSE after spin-up well below the
    attractor's spread); the stochastic EnKF, linear here, refuses.  (Plain ``arctan(x)`` saturates on Lorenz-63's
    scale and breaks them: ``benchmarks/results/assimilation_hard.md``.)"""
    sys = get_lorenz("lorenz63")
    g = torch.Generator().manual_seed(0)
    truth = sys.trajectory(sys.advance(torch.randn(8, 3, generator=g, dtype=torch.float64) * 5, 10.0), 60, 0.05)
    H = torch.eye(3, dtype=torch.float64)
    fn = lambda z: torch.atan(z / 10)  # noqa: E731
    ys = {k: fn(truth[:, k]) + 0.02 * torch.randn(8, 3, generator=g, dtype=torch.float64) for k in range(0, 60, 5)}
    clim = sys.advance(torch.randn(8, 20, 3, generator=g, dtype=torch.float64) * 5, 10.0)
    kw = dict(interval=0.05, num_states=60, obs_fn=fn)
    filt = run_filter(sys.advance, clim, ys, H, 0.02, method="etkf", inflation=1.05, **kw)
    enks = run_enks(sys.advance, clim, ys, H, 0.02, inflation=1.05, **kw)
    ienks = run_ienks(sys.advance, clim, ys, H, 0.02, lag=2, inflation=1.02, **kw)
    err = lambda m: float((m[:, 15:] - truth[:, 15:]).square().mean().sqrt())  # noqa: E731
    spread = float((truth[:, 15:] - truth[:, 15:].mean((0, 1))).square().mean().sqrt())
    errs = [err(r.mean) for r in (filt, enks, ienks)]
    assert max(errs) < 0.08 * spread, (errs, spread)  # climatology: about 1.0 * spread
    with pytest.raises(ValueError, match="need method='etkf'"):
        run_filter(sys.advance, clim, ys, H, 0.02, method="enkf", generator=g, **kw)


def test_ienks_backtracks_instead_of_diverging():
    """Saturating observations ``arctan(x)`` of Lorenz-63 (noise 0.1): full Gauss-Newton steps throw members out of
    the attractor until the integration overflows; halving the step from the last good point keeps every cycle
    finite."""
    sys = get_lorenz("lorenz63")
    g = torch.Generator().manual_seed(0)
    truth = sys.trajectory(sys.advance(sys.random_state(8, g, dtype=torch.float64), 10.0), 60, 0.05)
    H = torch.eye(3, dtype=torch.float64)
    ys = {k: torch.atan(truth[:, k]) + 0.1 * torch.randn(8, 3, generator=g, dtype=torch.float64)
          for k in range(0, 60, 5)}
    clim = sys.advance(sys.random_state(160, g, dtype=torch.float64), 10.0).reshape(8, 20, 3)
    kw = dict(interval=0.05, num_states=60, obs_fn=torch.atan, lag=2, inflation=1.02)
    with pytest.raises(FloatingPointError):
        run_ienks(sys.advance, clim, ys, H, 0.1, max_halvings=0, **kw)
    res = run_ienks(sys.advance, clim, ys, H, 0.1, **kw)
    assert torch.isfinite(res.mean).all()


# ----------------------------------------------------------------------------------------------------------------
# the localised smoother (LETKS) on a periodic grid


def _grid_problem(n: int = 6, m: int = 10, T: int = 7):
    """A linear model on an n x n periodic grid (x <- 0.9 x + 0.05 * its 4 neighbours), 2 x 2 block means of
    every other state with noise 0.3, and an ensemble of m members."""
    idx = torch.arange(n * n).reshape(n, n)
    F = 0.9 * torch.eye(n * n, dtype=torch.float64)
    for shift, dim in ((1, 0), (-1, 0), (1, 1), (-1, 1)):
        F[idx.flatten(), torch.roll(idx, shift, dim).flatten()] += 0.05
    H = torch.zeros((n // 2) ** 2, n * n, dtype=torch.float64)
    for b, (i, j) in enumerate((i, j) for i in range(0, n, 2) for j in range(0, n, 2)):
        H[b, idx[i : i + 2, j : j + 2].flatten()] = 0.25
    g = torch.Generator().manual_seed(7)
    x, obs = torch.randn(n * n, generator=g, dtype=torch.float64), {}
    for k in range(T):
        if k % 2 == 0:
            obs[k] = H @ x + 0.3 * torch.randn(H.shape[0], generator=g, dtype=torch.float64)
        x = F @ x
    ens0 = torch.randn(m, n * n, generator=g, dtype=torch.float64)
    kw = dict(interval=1.0, num_states=T, keep_ensemble=True)
    return (lambda e, dt: e @ F.T), ens0, obs, H, 0.3, kw


def test_letkf_transforms_are_the_letkf_analysis():
    from physics.assimilation.enkf import apply_transforms, etkf_analysis, grid_localization, letkf_transforms, obs_localization

    _, ens, obs, H, std, _ = _grid_problem()
    rho = obs_localization(grid_localization((6, 6), 1.5), H)
    G = letkf_transforms(ens, obs[0], H, std, rho)
    assert G.shape == (36, 10, 10)
    torch.testing.assert_close(apply_transforms(G, ens), etkf_analysis(ens, obs[0], H, std, localization=rho),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(G.sum(-1), torch.ones(36, 10, dtype=torch.float64), rtol=0, atol=1e-12)  # G 1 = 1


def test_letks_with_infinite_radius_is_the_enks_and_ends_as_the_letkf():
    from physics.assimilation.enkf import grid_localization

    advance, ens0, obs, H, std, kw = _grid_problem()
    enks = run_enks(advance, ens0, obs, H, std, **kw)
    letks_inf = run_enks(advance, ens0, obs, H, std, localization=grid_localization((6, 6), math.inf), **kw)
    torch.testing.assert_close(letks_inf.ensemble, enks.ensemble, rtol=0, atol=1e-10)
    # with a finite radius: the last state (nothing after it to smooth with) is the LETKF's analysis, and the
    # earlier states differ from the filter's (they were smoothed)
    loc = grid_localization((6, 6), 1.5)
    letks = run_enks(advance, ens0, obs, H, std, localization=loc, **kw)
    letkf = run_filter(advance, ens0, obs, H, std, method="etkf", localization=loc, **kw)
    torch.testing.assert_close(letks.ensemble[-1], letkf.ensemble[-1], rtol=0, atol=1e-10)
    assert (letks.ensemble[0] - letkf.ensemble[0]).abs().max() > 1e-3
