"""The bootstrap particle filter against the exact Kalman filter (linear-Gaussian, many particles), and its
systematic resampling."""

import math

import torch

from physics.assimilation.enkf import kalman_filter
from physics.assimilation.particle import run_particle_filter, systematic_resample


def test_systematic_resampling_keeps_each_particle_floor_or_ceil_of_m_w_times():
    g = torch.Generator().manual_seed(0)
    w = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    for _ in range(20):
        idx = systematic_resample(w.log().repeat(3, 1), g)
        counts = torch.stack([torch.bincount(i, minlength=4) for i in idx]).double()
        assert ((counts >= torch.floor(4 * w)) & (counts <= torch.ceil(4 * w))).all()


def test_particle_filter_matches_the_kalman_filter_with_many_particles():
    g = torch.Generator().manual_seed(0)
    F = torch.tensor([[math.cos(0.3), -math.sin(0.3)], [math.sin(0.3), math.cos(0.3)]], dtype=torch.float64) * 0.98
    H = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    Q = 0.05 * torch.eye(2, dtype=torch.float64)
    mean0, cov0 = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    ys = {k: torch.randn(1, generator=g, dtype=torch.float64) for k in (0, 2, 4, 6)}
    km, kc = kalman_filter(mean0, cov0, F, ys, H, 0.5, num_states=8, process_cov=Q)
    chol = torch.linalg.cholesky(Q)
    advance = lambda e, dt: e @ F.T + torch.randn(e.shape, generator=g, dtype=e.dtype) @ chol.T  # noqa: E731
    ens0 = mean0 + torch.randn(100_000, 2, generator=g, dtype=torch.float64)
    res = run_particle_filter(advance, ens0, ys, H, 0.5, interval=1.0, num_states=8, generator=g)
    assert torch.allclose(res.mean, km, atol=0.04), (res.mean - km).abs().max()  # Monte Carlo error ~0.01
    sd = torch.diagonal(kc, dim1=-2, dim2=-1).mean(-1).sqrt()
    assert torch.allclose(res.spread, sd, rtol=0.03)
