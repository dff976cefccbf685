"""Asymptotically exact samples from a trained Boltzmann generator: three routes from its samples ``x ~ q``.

* ``reweight`` -- self-normalised importance weights ``w ∝ exp(-u(x)) / q(x)`` (needs ``log q``, one ODE pass
  with the exact divergence); estimates ``E_p[f] ≈ Σ w f / Σ w`` are consistent as the sample count grows.
* ``mala`` -- every flow sample starts a MALA chain on ``exp(-u)`` (no ``log q`` needed); each chain's law
  converges to ``p`` as its steps grow, and a step is one energy + force evaluation.
* ``resample_mala`` -- sequential Monte Carlo with one reweighting step: resample the flow samples by their
  weights (systematic resampling), then move each copy with MALA (``p``-invariant, so it cannot undo the
  reweighting's exactness; it only restores the diversity that resampling removes).

The MALA kernel is the project's (:func:`physics.particles.mcmc.mala`) with a fixed step size -- no adaptation,
so every step is an exact ``p``-invariant move; the default step size is the median that the system's reference
chains adapted to.  Randomness comes only from the ``generator`` argument.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .energies import ParticleSystem
from .mcmc import mala

__all__ = ["RefinedSamples", "normalised_weights", "systematic_resample", "reweight", "mala_refine", "resample_mala", "ROUTES"]

ROUTES = ("reweight", "mala", "resample_mala")


@dataclass
class RefinedSamples:
    """Samples for estimating expectations under ``p``: ``x [N, n, d]``, their reduced energies ``[N]``
    (float64), normalised ``weights [N]`` (``None``: equal weights), the route, the energy (+ force) evaluations
    spent per sample beyond the flow's own, the MALA acceptance rate (``None`` without MALA), and for resampled
    sets the number of distinct flow samples they descend from (copies of one ancestor are correlated: a
    standard error over the ``N`` samples understates the error; ``std / sqrt(ancestors)`` does not)."""

    x: Tensor
    energies: Tensor
    weights: Tensor | None
    route: str
    energy_evals_per_sample: int
    acceptance: float | None = None
    ancestors: int | None = None

    def mean(self, values: Tensor) -> float:
        """``E_p[values]`` estimated from these samples: ``Σ w v`` (or the plain mean)."""
        v = values.to(torch.float64)
        return float(v.mean() if self.weights is None else (self.weights * v).sum())


def normalised_weights(log_w: Tensor | np.ndarray) -> Tensor:
    """Self-normalised importance weights ``[N]`` (float64, sum 1) of log-weights ``log_w [N]``; non-finite
    log-weights are weight 0.  ``ValueError`` if every weight is 0."""
    lw = torch.as_tensor(log_w, dtype=torch.float64)
    lw = torch.where(torch.isfinite(lw), lw, torch.full_like(lw, -torch.inf))
    if not torch.isfinite(lw).any():
        raise ValueError("every importance weight is zero (non-finite log-weights): nothing to reweight")
    return torch.softmax(lw, 0)


def systematic_resample(weights: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``n`` indices drawn by systematic resampling from normalised ``weights [N]`` (one uniform draw; each
    index appears ``floor(n w_i)`` or ``ceil(n w_i)`` times -- lower variance than multinomial)."""
    w = torch.as_tensor(weights, dtype=torch.float64)
    u = (torch.rand((), generator=generator, dtype=torch.float64) + torch.arange(n, dtype=torch.float64)) / n
    cdf = torch.cumsum(w, 0)
    cdf[-1] = 1.0
    return torch.searchsorted(cdf, u).clamp(max=len(w) - 1)


def reweight(system: ParticleSystem, x: Tensor, log_q: Tensor) -> RefinedSamples:
    """Self-normalised importance weights of flow samples ``x [N, n, d]`` with model log-density ``log_q [N]``."""
    e = system.reduced_energy(x.to(torch.float64))
    return RefinedSamples(x=x, energies=e, weights=normalised_weights(-e - log_q.to(torch.float64)), route="reweight",
                          energy_evals_per_sample=1)


def mala_refine(system: ParticleSystem, x: Tensor, steps: int, *, generator: torch.Generator,
                step_size: float, progress: bool = False, route: str = "mala") -> RefinedSamples:
    """``steps`` MALA steps (fixed ``step_size``) on ``exp(-u)`` from each configuration of ``x [N, n, d]``;
    returns each chain's last state.  States with a non-finite energy (an exploded flow sample) are replaced by
    the lowest-energy start first: a chain cannot start where the target has no mass."""
    x = x.detach().to(torch.float64).clone()
    e = system.reduced_energy(x)
    bad = ~torch.isfinite(e) | ~torch.isfinite(x).flatten(1).all(1)
    if bad.all():
        raise ValueError("no flow sample has a finite energy: MALA cannot start")
    if bad.any():
        x[bad] = x[torch.where(bad, torch.inf, e).argmin()].clone()
    if steps == 0:
        return RefinedSamples(x=x, energies=system.reduced_energy(x), weights=None, route=route,
                              energy_evals_per_sample=1)
    res = mala(system.reduced_energy, x, n_steps=steps, step_size=step_size, generator=generator, burn_in=0,
               thin=steps, zero_com=True, trace_chains=0, progress=progress, desc=f"MALA {system.name}",
               energy_and_grad_fn=system.reduced_energy_and_grad)
    return RefinedSamples(x=res.final_state, energies=res.energies[:, -1], weights=None, route=route,
                          energy_evals_per_sample=steps + 1, acceptance=float(res.acceptance.mean()))


def resample_mala(system: ParticleSystem, x: Tensor, log_q: Tensor, steps: int, *, generator: torch.Generator,
                  step_size: float, progress: bool = False) -> RefinedSamples:
    """Systematic resampling of ``x`` by its importance weights, then ``steps`` MALA steps from every copy."""
    w = reweight(system, x, log_q).weights
    idx = systematic_resample(w, len(x), generator)
    out = mala_refine(system, x[idx], steps, generator=generator, step_size=step_size, progress=progress,
                      route="resample_mala")
    out.ancestors = int(torch.unique(idx).numel())
    return out
