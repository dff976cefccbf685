"""Posterior sampling against the analytic posterior of a linear-Gaussian inverse problem."""

from __future__ import annotations

import math

import pytest
import torch

from moldiff.diffusion import (
    VESDE,
    VPSDE,
    Denoiser,
    DiscreteVP,
    GaussianObservation,
    PointCloudSpace,
    PosteriorDenoiser,
    get_sampler,
    sample_dps,
    sample_pc,
    time_grid,
)
from moldiff.diffusion.guidance import MMPSDenoiser

from .gaussian import GaussianTarget

D = torch.float64
MU = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=D)
S2 = torch.tensor([0.25, 4.0, 1.0, 2.0], dtype=D)
A = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]], dtype=D)
SIGMA_Y = 0.5
Y = torch.tensor([0.3, -0.4], dtype=D)
N = 8000


def _posterior() -> tuple[torch.Tensor, torch.Tensor]:
    s = torch.diag(S2)
    gain = s @ A.T @ torch.linalg.inv(A @ s @ A.T + SIGMA_Y**2 * torch.eye(2, dtype=D))
    return MU + gain @ (Y - A @ MU), s - gain @ A @ s


def _sda(gamma: float, corrector_steps: int, steps: int = 256, seed: int = 1) -> torch.Tensor:
    proc = VPSDE()
    prior = GaussianTarget(proc, MU, S2).denoiser()
    obs = GaussianObservation(Y, lambda x: x @ A.T, SIGMA_Y)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 4, generator=g, dtype=D)
    ts = time_grid(proc, steps, dtype=D)
    return sample_pc(PosteriorDenoiser(prior, obs, gamma=gamma), x, ts, snr=0.1, corrector_steps=corrector_steps,
                     predictor="ddim", generator=g, progress=False)


def _z_scores(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean errors in standard errors, and variance errors in standard errors (Gaussian: sd(var) = v sqrt(2/(n-1)))."""
    m, c = _posterior()
    v = torch.diag(c)
    z_mean = (x.mean(0) - m) / (v / len(x)).sqrt()
    z_var = (x.var(0) - v) / (v * math.sqrt(2 / (len(x) - 1)))
    return z_mean, z_var


def test_sda_matches_the_analytic_posterior():
    """With the exact prior score, gamma = 1 (the t -> 0 limit of the Gaussian prior's Cov[x0 | x_t] is
    (sigma/alpha)^2 I) and 4 Langevin corrections per step, the samples have the Kalman posterior's mean and
    variances.  Measured: |z| <= 1.4 for the means and <= 2.2 for the variances."""
    z_mean, z_var = _z_scores(_sda(gamma=1.0, corrector_steps=4))
    assert z_mean.abs().max() < 4, z_mean
    assert z_var.abs().max() < 4, z_var


def test_sda_checks_can_fail():
    """The same check rejects a badly calibrated likelihood (gamma = 0.01: mean off by 9-14 SE) and the prior."""
    z_mean, _ = _z_scores(_sda(gamma=1e-2, corrector_steps=1))
    assert z_mean.abs().max() > 6
    g = torch.Generator().manual_seed(0)
    prior = MU + S2.sqrt() * torch.randn(N, 4, generator=g, dtype=D)
    assert _z_scores(prior)[0].abs().max() > 6


def test_dps_moves_towards_the_observations():
    """DPS is a heuristic: it is not exact on this problem (Chung et al. say so; measured bias 11-18 SE) but it
    must fit the observations far better than the prior does."""
    proc = VPSDE()
    prior = GaussianTarget(proc, MU, S2).denoiser()
    obs = GaussianObservation(Y, lambda x: x @ A.T, SIGMA_Y)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2000, 4, generator=g, dtype=D)
    out = sample_dps(prior, x, time_grid(proc, 500, dtype=D), observation=obs, zeta=0.3, generator=g, progress=False)
    fit = obs.residual(out).square().sum(-1).mean()
    base = obs.residual(MU + S2.sqrt() * torch.randn(2000, 4, generator=g, dtype=D)).square().sum(-1).mean()
    assert fit < 0.25 * base, (fit, base)
    assert torch.isfinite(out).all()


def test_bad_observations_raise():
    with pytest.raises(ValueError, match="NaN"):
        GaussianObservation(torch.tensor([float("nan")]), lambda x: x, 1.0)
    with pytest.raises(ValueError, match="noise_std"):
        GaussianObservation(torch.zeros(2), lambda x: x, 0.0)
    obs = GaussianObservation(torch.zeros(3), lambda x: x, 1.0)
    with pytest.raises(ValueError, match="gives 4 values"):
        obs.residual(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="gamma"):
        PosteriorDenoiser(GaussianTarget(VPSDE(), MU, S2).denoiser(), obs, gamma=-1)


# -- MMPS: a correlated Gaussian prior, where p(y | x_t) is exactly MMPS's Gaussian ------------------------------
C_ROOT = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0],
                       [0.8, 0.6, 0.0, 0.0, 0.0],
                       [-0.5, 0.3, 0.9, 0.0, 0.0],
                       [0.2, -0.7, 0.4, 0.5, 0.0],
                       [0.6, 0.1, -0.3, 0.8, 0.7]], dtype=D)
COV = C_ROOT @ C_ROOT.T  # correlated prior covariance, D = 5
MEAN = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.5], dtype=D)
OBS = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0],   # observes part of the state: P = 3 < D = 5
                    [0.0, 0.0, 1.0, 1.0, 0.0],
                    [0.0, 0.0, 0.0, 0.0, 1.0]], dtype=D)
OBS_STD = torch.tensor([0.3, 0.5, 0.2], dtype=D)
OBS_Y = torch.tensor([1.2, 1.0, 0.4], dtype=D)
N_MMPS = 4000


class CorrelatedGaussian:
    """Data ``x0 ~ N(MEAN, COV)``: ``x_t ~ N(alpha m, alpha^2 C + sigma^2 I)``, exact score and posteriors."""

    def __init__(self, process):
        self.process = process
        self.lam, self.q = torch.linalg.eigh(COV)

    def _k_inv(self, v: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``(alpha^2 C + sigma^2 I)^{-1} v`` per row, through the eigendecomposition (cheap, differentiable)."""
        w = v @ self.q
        return (w / (alpha[:, None] ** 2 * self.lam + sigma[:, None] ** 2)) @ self.q.T

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.process.marginal(t)
        return -self._k_inv(x - alpha[:, None] * MEAN, alpha, sigma)

    def denoiser(self, kind: str = "score") -> Denoiser:
        def fn(x, t):
            alpha, sigma = (v[:, None] for v in self.process.marginal(t))
            s = self.score(x, t)
            return {"score": s, "eps": -sigma * s, "x0": (x + sigma**2 * s) / alpha}[kind]

        return Denoiser(fn, self.process, kind=kind)

    def posterior_mean(self, x_t, t, h, y, noise_std) -> torch.Tensor:
        """``E[x0 | x_t, y]`` for ``y = h x0 + N(0, diag(noise_std^2))``, as one Kalman update of the prior on
        the stacked observations ``[x_t; y]`` (no Tweedie, no Jacobians)."""
        out = []
        for b in range(len(x_t)):
            alpha, sigma = self.process.marginal(t[b])
            big_h = torch.cat([alpha * torch.eye(5, dtype=D), h])
            noise = torch.diag(torch.cat([sigma**2 * torch.ones(5, dtype=D), noise_std**2]))
            z = torch.cat([x_t[b], y if y.dim() == 1 else y[b]])
            gain = COV @ big_h.T @ torch.linalg.inv(big_h @ COV @ big_h.T + noise)
            out.append(MEAN + gain @ (z - big_h @ MEAN))
        return torch.stack(out)

    def posterior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and covariance of ``x0 | y`` for the module's observation."""
        gain = COV @ OBS.T @ torch.linalg.inv(OBS @ COV @ OBS.T + torch.diag(OBS_STD**2))
        return MEAN + gain @ (OBS_Y - OBS @ MEAN), COV - gain @ OBS @ COV


def _noisy_states(process, ts: list[float], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = torch.tensor(ts, dtype=D)
    x0 = MEAN + torch.randn(len(ts), 5, generator=g, dtype=D) @ C_ROOT.T
    alpha, sigma = process.marginal(t)
    return alpha[:, None] * x0 + sigma[:, None] * torch.randn(len(ts), 5, generator=g, dtype=D), t


def _linear(x: torch.Tensor) -> torch.Tensor:
    return x @ OBS.T


@pytest.mark.parametrize("process", [VPSDE(), VESDE(), DiscreteVP(schedule="cosine", num_steps=100)],
                         ids=["vp", "ve", "ddpm"])
@pytest.mark.parametrize("kind", ["score", "eps", "x0"])
def test_mmps_x0_is_the_exact_posterior_mean(process, kind):
    """Exact denoiser of a correlated Gaussian prior, linear operator: MMPS's guided x0 is E[x0 | x_t, y] at
    every noise level (per-sample times in one batch), for shared [P] and per-sample [B, P] observations,
    under torch.no_grad as the samplers may call it; one CG iteration is not enough, nor is SDA's guess."""
    target = CorrelatedGaussian(process)
    x, t = _noisy_states(process, [0.02, 0.1, 0.3, 0.5, 0.7, 0.9])
    rows = OBS_Y + 0.3 * torch.arange(6, dtype=D)[:, None]
    for y in (OBS_Y, rows):
        obs = GaussianObservation(y, _linear, OBS_STD)
        exact = target.posterior_mean(x, t, OBS, y, OBS_STD)
        with torch.no_grad():
            got = MMPSDenoiser(target.denoiser(kind), obs, cg_iterations=5).x0(x, t)
        torch.testing.assert_close(got, exact, rtol=1e-9, atol=1e-9)
        assert torch.isfinite(got).all()
    one = MMPSDenoiser(target.denoiser(kind), obs, cg_iterations=1).x0(x, t)
    sda = PosteriorDenoiser(target.denoiser(kind), obs, gamma=1e-2).x0(x, t)
    assert (one - exact).abs().max() > 1e-3
    assert (sda - exact).abs().max() > 1e-2


def test_mmps_linearises_a_nonlinear_operator():
    """A nonlinear operator: MMPS is the extended-Kalman update of p(x0 | x_t) = N(x0_hat, Sigma_t) (Tweedie's
    exact moments, here written out densely) with the operator's Jacobian H at x0_hat, residual y - f(x0_hat)."""
    proc = VPSDE()
    target = CorrelatedGaussian(proc)
    w = torch.tensor([[0.5, -1.0, 0.0, 0.3, 0.0], [0.0, 0.7, 0.7, 0.0, -0.4], [1.0, 0.0, 0.0, 0.0, 0.2]], dtype=D)

    def f(x):
        return x @ OBS.T + 0.5 * torch.sin(x @ w.T)

    x, t = _noisy_states(proc, [0.05, 0.3, 0.6, 0.85], seed=3)
    got = MMPSDenoiser(target.denoiser("eps"), GaussianObservation(OBS_Y, f, OBS_STD), cg_iterations=3).x0(x, t)
    for b in range(len(x)):
        alpha, sigma = proc.marginal(t[b])
        k = alpha**2 * COV + sigma**2 * torch.eye(5, dtype=D)
        x0_hat = MEAN + alpha * COV @ torch.linalg.solve(k, x[b] - alpha * MEAN)
        cov = COV - alpha**2 * COV @ torch.linalg.solve(k, COV)
        h = OBS + 0.5 * torch.cos(w @ x0_hat)[:, None] * w
        gain = cov @ h.T @ torch.linalg.inv(h @ cov @ h.T + torch.diag(OBS_STD**2))
        expected = x0_hat + gain @ (OBS_Y - f(x0_hat[None])[0])
        torch.testing.assert_close(got[b], expected, rtol=1e-9, atol=1e-9)
        # the nonlinearity matters: the update with the operator's linear part alone is different
        lin = cov @ OBS.T @ torch.linalg.solve(OBS @ cov @ OBS.T + torch.diag(OBS_STD**2), OBS_Y - OBS @ x0_hat)
        assert (x0_hat + lin - expected).abs().max() > 1e-2


def test_mmps_conjugate_gradient_is_per_sample():
    """With too few CG iterations to converge, a batch of samples at different times and with different
    observations gives exactly what each sample gives alone (the CG step sizes are per sample)."""
    proc = VPSDE()
    target = CorrelatedGaussian(proc)
    x, t = _noisy_states(proc, [0.1, 0.4, 0.7, 0.95], seed=4)
    rows = OBS_Y - 0.5 * torch.arange(4, dtype=D)[:, None]
    model = MMPSDenoiser(target.denoiser(), GaussianObservation(rows, _linear, OBS_STD), cg_iterations=2)
    batch = model.x0(x, t)
    # Tolerance: batched and single-sample matrix products may sum in another order (it depends on the CPU's
    # kernels), so the two agree to rounding -- O(n eps) per product, amplified by the CG's divisions by inner
    # products of size ~ 1/kappa -- about 1e-12 here (measured 2.7e-12 on AVX-512).  A step size shared across the
    # batch would move each result by the difference between samples' step sizes, order 1e-1 (the four samples'
    # times and observations differ at order one), so 1e-9 keeps 8 orders of magnitude from that bug.
    for b in range(len(x)):
        alone = MMPSDenoiser(target.denoiser(), GaussianObservation(rows[b], _linear, OBS_STD), cg_iterations=2)
        torch.testing.assert_close(batch[b], alone.x0(x[b : b + 1], t[b : b + 1])[0], rtol=1e-9, atol=1e-9)
    assert (batch - target.posterior_mean(x, t, OBS, rows, OBS_STD)).abs().max() > 1e-3  # not converged
    # what a mix-up between samples costs, for scale: sample 0's state solved at sample 3's time
    shared_t = MMPSDenoiser(target.denoiser(), GaussianObservation(rows[:1], _linear, OBS_STD),
                            cg_iterations=2).x0(x[:1], t[3:])
    assert (shared_t[0] - batch[0]).abs().max() > 1e-3


def test_mmps_uses_the_prior_space():
    """The same problem with each sample stored as a point cloud of 5 one-dimensional nodes (PointCloudSpace,
    absolute positions): the per-sample alpha_t, sigma_t are expanded through the space, and the guided x0
    is the exact posterior mean, node by node."""
    proc = VPSDE()
    target = CorrelatedGaussian(proc)
    x, t = _noisy_states(proc, [0.05, 0.3, 0.6, 0.9], seed=5)
    g = len(x)
    space = PointCloudSpace(torch.arange(g).repeat_interleave(5), g, pos_dims=1, zero_com=False)

    def eps_fn(nodes, tb):
        _, sigma = proc.marginal(tb)
        return (-sigma[:, None] * target.score(nodes.reshape(g, 5), tb)).reshape(-1, 1)

    prior = Denoiser(eps_fn, proc, kind="eps", space=space)
    obs = GaussianObservation(OBS_Y, lambda nodes: nodes.reshape(g, 5) @ OBS.T, OBS_STD)
    got = MMPSDenoiser(prior, obs, cg_iterations=3).x0(x.reshape(-1, 1), t)
    assert got.shape == (5 * g, 1)
    torch.testing.assert_close(got.reshape(g, 5), target.posterior_mean(x, t, OBS, OBS_Y, OBS_STD),
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sampler,steps", [("ode_heun", 100), ("euler_maruyama", 300)])
def test_mmps_samples_the_exact_posterior(sampler, steps):
    """MMPS (3 CG iterations = P, exact) with the exact prior denoiser and a stock sampler draws x0 | y: mean
    and every covariance entry within 5 standard errors of the Kalman posterior's (4000 samples; measured
    max |z| 1.8 for the means, 3.5 for the covariances).  The same check rejects SDA with gamma = 0.01
    (measured 20-50 SE off) and MMPS with one CG iteration (30-40 SE off on the ODE)."""
    proc = VPSDE()
    target = CorrelatedGaussian(proc)
    obs = GaussianObservation(OBS_Y, _linear, OBS_STD)
    mean, cov = target.posterior()
    se_cov = ((torch.outer(cov.diag(), cov.diag()) + cov**2) / (N_MMPS - 1)).sqrt()

    def z_max(model) -> tuple[float, float]:
        g = torch.Generator().manual_seed(0)
        x = proc.prior_sample(torch.zeros(N_MMPS, 5, dtype=D), generator=g)
        out = get_sampler(sampler)(model, x, time_grid(proc, steps, dtype=D), generator=g, progress=False)
        assert torch.isfinite(out).all()
        z_mean = (out.mean(0) - mean) / (cov.diag() / N_MMPS).sqrt()
        z_cov = (torch.cov(out.T) - cov) / se_cov
        return z_mean.abs().max().item(), z_cov.abs().max().item()

    z_mean, z_cov = z_max(MMPSDenoiser(target.denoiser(), obs, cg_iterations=3))
    assert z_mean < 5 and z_cov < 5, (z_mean, z_cov)
    assert max(z_max(PosteriorDenoiser(target.denoiser(), obs, gamma=1e-2))) > 10
    if sampler == "ode_heun":
        assert max(z_max(MMPSDenoiser(target.denoiser(), obs, cg_iterations=1))) > 10


def test_mmps_bad_input_raises():
    prior = CorrelatedGaussian(VPSDE()).denoiser()
    obs = GaussianObservation(OBS_Y, _linear, OBS_STD)
    for bad in (0, -2, 2.5, True, None):
        with pytest.raises(ValueError, match="cg_iterations"):
            MMPSDenoiser(prior, obs, cg_iterations=bad)
    with pytest.raises(ValueError, match="NaN"):
        MMPSDenoiser(prior, GaussianObservation(torch.tensor([1.0, float("nan"), 0.0], dtype=D), _linear, 0.1))
    for std in (0.0, -1.0, torch.tensor([0.3, 0.0, 0.2], dtype=D)):
        with pytest.raises(ValueError, match="noise_std"):
            MMPSDenoiser(prior, GaussianObservation(OBS_Y, _linear, std))
    # fields reassigned after the observation was built are checked again
    changed = GaussianObservation(OBS_Y.clone(), _linear, OBS_STD)
    changed.y[1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        MMPSDenoiser(prior, changed)
    changed = GaussianObservation(OBS_Y, _linear, OBS_STD)
    changed.noise_std = -OBS_STD
    with pytest.raises(ValueError, match="noise_std"):
        MMPSDenoiser(prior, changed)
    with pytest.raises(ValueError, match="noise_std must be a scalar or"):
        MMPSDenoiser(prior, GaussianObservation(OBS_Y, _linear, torch.ones(2, dtype=D)))
    x, t = _noisy_states(VPSDE(), [0.5, 0.5])
    with pytest.raises(ValueError, match="the operator gives"):
        MMPSDenoiser(prior, GaussianObservation(OBS_Y, lambda v: v, OBS_STD)).x0(x, t)
    with pytest.raises(ValueError, match="observations for 3 samples"):
        MMPSDenoiser(prior, GaussianObservation(OBS_Y.expand(3, 3), _linear, OBS_STD)).x0(x, t)


# -- latent assimilation: a Gaussian prior over latents, observed through a linear decoder -----------------------
DECODER = torch.tensor([[1.0, 0.5, 0.0, 0.0, 0.0],
                        [0.0, 1.0, -0.5, 0.0, 0.0],
                        [0.0, 0.0, 1.0, 0.0, 0.3],
                        [0.2, 0.0, 0.0, 1.0, 0.0],
                        [0.0, -0.4, 0.0, 0.0, 1.0],
                        [0.5, 0.5, 0.5, 0.5, 0.5]], dtype=D)  # 5 latents -> 6 "pixels"
OFFSET = torch.tensor([0.1, -0.2, 0.0, 0.3, 0.0, 1.0], dtype=D)
PIXEL_OBS = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                          [0.0, 0.0, 0.5, 0.5, 0.0, 0.0],
                          [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]], dtype=D)


def _decode(z: torch.Tensor) -> torch.Tensor:
    return z @ DECODER.T + OFFSET


def test_latent_assimilation_through_a_linear_decoder_is_the_kalman_posterior():
    """Latent prior N(MEAN, COV) with its exact denoiser, a linear decoder D(z) = M z + b, pixel observations
    y = A D(z) + noise: MMPS on ``GaussianObservation(y, A, std).through(D)`` gives the exact E[z0 | z_t, y] (the
    Kalman update with H = A M on y - A b), and its samples, decoded, have the pixel-space Kalman posterior's mean
    and covariance (M mu_z + b, M S_z M^T) within 5 standard errors (4000 samples)."""
    proc = VPSDE()
    target = CorrelatedGaussian(proc)
    h, y_eff = PIXEL_OBS @ DECODER, OBS_Y - PIXEL_OBS @ OFFSET
    obs = GaussianObservation(OBS_Y, lambda x: x @ PIXEL_OBS.T, OBS_STD).through(_decode)
    z, t = _noisy_states(proc, [0.05, 0.3, 0.6, 0.9], seed=6)
    got = MMPSDenoiser(target.denoiser(), obs, cg_iterations=3).x0(z, t)
    torch.testing.assert_close(got, target.posterior_mean(z, t, h, y_eff, OBS_STD), rtol=1e-9, atol=1e-9)

    gain = COV @ h.T @ torch.linalg.inv(h @ COV @ h.T + torch.diag(OBS_STD**2))
    mean_z, cov_z = MEAN + gain @ (y_eff - h @ MEAN), COV - gain @ h @ COV
    mean_x, cov_x = _decode(mean_z[None])[0], DECODER @ cov_z @ DECODER.T
    g = torch.Generator().manual_seed(0)
    zt = proc.prior_sample(torch.zeros(N_MMPS, 5, dtype=D), generator=g)
    x = _decode(get_sampler("ode_heun")(MMPSDenoiser(target.denoiser(), obs, cg_iterations=3), zt,
                                        time_grid(proc, 100, dtype=D), generator=g, progress=False))
    z_mean = (x.mean(0) - mean_x) / (cov_x.diag() / N_MMPS).sqrt()
    se_cov = ((torch.outer(cov_x.diag(), cov_x.diag()) + cov_x**2) / (N_MMPS - 1)).sqrt()
    assert z_mean.abs().max() < 5 and ((torch.cov(x.T) - cov_x) / se_cov).abs().max() < 5
    # the decoder matters: the same samples without the offset miss the posterior mean
    assert ((x - OFFSET).mean(0) - mean_x).abs().max() / (cov_x.diag() / N_MMPS).sqrt().max() > 10
