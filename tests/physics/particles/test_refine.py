"""Unbiased samples from a flow's output: reweighting, MALA refinement and resampling + MALA reach the exact mean
energy of an analytic target (equipartition) from a deliberately wrong proposal."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from moldiff.diffusion.spaces import remove_com_dense
from physics.particles.energies import ParticleSystem
from physics.particles.refine import mala_refine, resample_mala, reweight, systematic_resample

pytestmark = pytest.mark.usefixtures("global_rng")


@dataclass(frozen=True)
class Tethered(ParticleSystem):
    """``U = k/2 sum_i |x_i - com|^2``: a Gaussian on the zero-CoM subspace, ``E_p[U] = (n - 1) d / 2``."""

    name: str = "tethered"
    n_particles: int = 4
    dim: int = 3
    k: float = 1.0

    def energy(self, x):
        return 0.5 * self.k * remove_com_dense(x).pow(2).sum((1, 2))


def _proposal(system, N, s2, g):
    """``x ~ N(0, s2 P)`` on the zero-CoM subspace and its exact log-density there."""
    x = remove_com_dense(torch.randn(N, system.n_particles, system.dim, generator=g, dtype=torch.float64)) * math.sqrt(s2)
    log_q = -0.5 * x.pow(2).sum((1, 2)) / s2 - 0.5 * system.dof * math.log(2 * math.pi * s2)
    return x, log_q


def test_systematic_resampling_counts():
    w = torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64)
    idx = systematic_resample(w, 80, torch.Generator().manual_seed(0))
    assert torch.bincount(idx, minlength=4).tolist() == [40, 20, 10, 10]
    idx = systematic_resample(torch.tensor([0.3, 0.7], dtype=torch.float64), 10, torch.Generator().manual_seed(1))
    assert torch.bincount(idx, minlength=2).tolist() == [3, 7]


def test_three_routes_remove_the_proposal_bias():
    system = Tethered()
    exact = system.dof / 2  # 4.5
    g = torch.Generator().manual_seed(0)
    x, log_q = _proposal(system, 20_000, 1.6, g)
    raw = system.reduced_energy(x).mean().item()
    assert raw == pytest.approx(1.6 * exact, rel=0.03)  # the proposal is biased by 60 %
    rw = reweight(system, x, log_q)
    assert rw.weights.sum().item() == pytest.approx(1.0) and rw.energy_evals_per_sample == 1
    assert rw.mean(rw.energies) == pytest.approx(exact, rel=0.03)
    m = mala_refine(system, x[:4000], 60, generator=torch.Generator().manual_seed(1), step_size=0.3)
    assert m.energy_evals_per_sample == 61 and 0.3 < m.acceptance < 1.0
    assert m.mean(m.energies) == pytest.approx(exact, rel=0.05)
    m0 = mala_refine(system, x[:4000], 0, generator=torch.Generator().manual_seed(1), step_size=0.3)
    assert m0.mean(m0.energies) == pytest.approx(1.6 * exact, rel=0.05)  # no steps: still the proposal
    r = resample_mala(system, x[:4000], log_q[:4000], 10, generator=torch.Generator().manual_seed(2), step_size=0.3)
    assert r.weights is None and r.mean(r.energies) == pytest.approx(exact, rel=0.05)


def test_exploded_samples_do_not_start_chains():
    system = Tethered()
    x, _ = _proposal(system, 8, 1.0, torch.Generator().manual_seed(3))
    x[2, 0, 0] = float("nan")
    out = mala_refine(system, x, 3, generator=torch.Generator().manual_seed(0), step_size=0.1)
    assert torch.isfinite(out.x).all() and torch.isfinite(out.energies).all()
    x[:] = float("nan")
    with pytest.raises(ValueError, match="finite energy"):
        mala_refine(system, x, 3, generator=torch.Generator().manual_seed(0), step_size=0.1)
