"""RePaint against the exact Gaussian conditional, and on point clouds (given atoms kept, zero-CoM respected)."""

import math

import pytest
import torch

from moldiff.diffusion import VPSDE, Denoiser, PointCloudSpace, time_grid
from moldiff.diffusion.inpainting import sample_repaint

D = torch.float64
MU = torch.tensor([1.0, -1.0, 0.5], dtype=D)
COV = torch.tensor([[1.0, 0.8, 0.3], [0.8, 1.5, -0.4], [0.3, -0.4, 0.7]], dtype=D)


def _correlated_gaussian(proc):
    """The exact score of ``x_t`` for ``x0 ~ N(MU, COV)``."""

    def score(x, t):
        alpha, sigma = proc.marginal(t.to(D))
        cov = alpha[:, None, None] ** 2 * COV + sigma[:, None, None] ** 2 * torch.eye(3, dtype=D)
        return -torch.linalg.solve(cov, (x - alpha[:, None] * MU).unsqueeze(-1)).squeeze(-1)

    return Denoiser(score, proc, kind="score")


def _exact_conditional(a: float):
    s11, s12, s22 = COV[:1, :1], COV[:1, 1:], COV[1:, 1:]
    mean = MU[1:] + (s12.T @ torch.linalg.solve(s11, (torch.tensor([a], dtype=D) - MU[:1])[:, None])).squeeze(-1)
    return mean, s22 - s12.T @ torch.linalg.solve(s11, s12)


def _check_moments(x, mean, cov, k=4.0):
    n = len(x)
    sd = cov.diagonal().sqrt()
    assert ((x.mean(0) - mean).abs() < k * sd / math.sqrt(n)).all(), (x.mean(0), mean)
    se = (cov.diagonal()[:, None] * cov.diagonal()[None] + cov**2).sqrt() / math.sqrt(n - 1)
    assert ((torch.cov(x.T) - cov).abs() < k * se).all(), (torch.cov(x.T), cov)


def test_guided_inpainting_is_the_exact_gaussian_conditional():
    """Known ``x[0] = 2`` as an observation with noise 1e-4 and MMPS (exact for a Gaussian prior and a linear
    operator): the unknown ``(x[1], x[2])`` follow ``N(mu_2|1, Sigma_2|1)`` (the Schur complement) within 4
    standard errors."""
    from moldiff.diffusion import MMPSDenoiser, sample_ode
    from moldiff.diffusion.inpainting import inpainting_observation

    proc = VPSDE()
    model = _correlated_gaussian(proc)
    n = 4000
    known = torch.full((3,), 2.0, dtype=D)
    obs = inpainting_observation(known, torch.tensor([True, False, False]), noise_std=1e-4)
    g = torch.Generator().manual_seed(0)
    x = proc.prior_sample(torch.zeros(n, 3, dtype=D), generator=g)
    out = sample_ode(MMPSDenoiser(model, obs, cg_iterations=1), x, time_grid(proc, 200, dtype=D), progress=False)
    assert (out[:, 0] - 2.0).abs().max() < 1e-3
    _check_moments(out[:, 1:], *_exact_conditional(2.0))


def test_repaint_approaches_the_exact_gaussian_conditional():
    """RePaint with 10 resampling repeats on 100 steps: the conditional mean within 0.06 and the covariance
    within 15 % of the exact one (RePaint is approximate: its stationary law at each level is not the exact
    conditional), the known entry exact."""
    proc = VPSDE()
    model = _correlated_gaussian(proc)
    n = 3000
    g = torch.Generator().manual_seed(0)
    known = torch.zeros(n, 3, dtype=D)
    known[:, 0] = 2.0
    x = proc.prior_sample(known, generator=g)
    out = sample_repaint(model, x, time_grid(proc, 100, dtype=D), known=known, mask=torch.tensor([True, False, False]),
                         resample=10, generator=g, progress=False)
    assert (out[:, 0] == 2.0).all()
    mean, cov = _exact_conditional(2.0)
    assert (out[:, 1:].mean(0) - mean).abs().max() < 0.06
    assert ((torch.cov(out[:, 1:].T) - cov).abs() < 0.15 * cov.diagonal().max()).all()


def test_without_resampling_the_conditional_is_off_and_resampling_fixes_it():
    """Plain replacement (``resample = 1``) ignores the correlation at high noise; resampling reduces the error
    of the conditional mean."""
    proc = VPSDE()
    model = _correlated_gaussian(proc)
    known = torch.zeros(2000, 3, dtype=D)
    known[:, 0] = 3.0
    mask = torch.tensor([True, False, False])
    target = MU[1] + COV[0, 1] / COV[0, 0] * (3.0 - MU[0])
    errs = []
    for u in (1, 8):
        g = torch.Generator().manual_seed(1)
        out = sample_repaint(model, proc.prior_sample(known, generator=g), time_grid(proc, 50, dtype=D), known=known,
                             mask=mask, resample=u, generator=g, progress=False)
        errs.append(abs(float(out[:, 1].mean() - target)))
    assert errs[1] < errs[0], errs


def test_repaint_on_point_clouds_keeps_the_given_atoms():
    """Two clouds of 4 atoms, atoms 0-1 given: the output has them exactly, the unknown atoms finite, and the
    sampler works in the zero-CoM space throughout (so the returned cloud is translated back onto the given
    atoms)."""
    proc = VPSDE()
    batch = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    space = PointCloudSpace(batch, 2)
    model = Denoiser(lambda x, t: torch.zeros_like(x), proc, kind="eps", space=space)  # prior N(0, I) on zero-CoM
    known = torch.zeros(8, 3, dtype=D)
    known[0] = torch.tensor([5.0, 5.0, 5.0], dtype=D)
    known[1] = torch.tensor([6.0, 5.0, 5.0], dtype=D)
    known[4] = torch.tensor([-1.0, 0.0, 0.0], dtype=D)
    known[5] = torch.tensor([1.0, 0.0, 0.0], dtype=D)
    mask = torch.tensor([1, 1, 0, 0, 1, 1, 0, 0], dtype=torch.bool)[:, None]
    g = torch.Generator().manual_seed(0)
    out = sample_repaint(model, space.randn_like(known, g), time_grid(proc, 30, dtype=D), known=known, mask=mask,
                         resample=2, generator=g, progress=False)
    assert torch.equal(out[mask.squeeze(1)], known[mask.squeeze(1)])
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="resample"):
        sample_repaint(model, known, time_grid(proc, 3, dtype=D), known=known, mask=mask, resample=0)
