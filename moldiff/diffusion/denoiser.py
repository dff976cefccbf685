"""The denoiser: a network's prediction plus the process it was trained on.

A backbone predicts one *kind* of quantity (``eps``, ``x0``, ``score`` or the probability-flow ``velocity``
``dx_t/dt`` that flow matching regresses) and never knows which process
trained it.  :class:`Denoiser` declares that kind once and converts on demand, so a sampler asks for
``model.eps``, ``model.x0`` or ``model.score`` -- whatever its update needs (NVlabs/edm's
preconditioner idea).  It also carries the state's :class:`~moldiff.diffusion.spaces.Space`, which the
samplers use for noise and per-sample reductions.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .processes import Process
from .spaces import EuclideanSpace, Space

__all__ = ["Denoiser", "PREDICTION_KINDS"]

PREDICTION_KINDS = ("eps", "x0", "score", "velocity")


class Denoiser:
    """Wraps ``fn(x_t [*], t [B]) -> prediction [*]`` of a declared ``kind``.

    Args:
        fn: the network (or an exact function); ``t`` is per sample, shape ``[B]``.
        process: the noise process that defines ``alpha(t)``, ``sigma(t)``.
        kind: what ``fn`` predicts: ``eps`` (noise), ``x0`` (clean state), ``score`` (grad log p_t) or
            ``velocity`` (``dx_t/dt``; the conversions assume the process's Gaussian marginal, so for a model
            trained with a non-independent coupling only ``velocity`` itself -- ODE sampling -- is exact).
        space: the state space (default: Euclidean states ``[B, *event]``).
    """

    def __init__(
        self,
        fn: Callable[[Tensor, Tensor], Tensor],
        process: Process,
        kind: str = "eps",
        space: Space | None = None,
    ):
        if kind not in PREDICTION_KINDS:
            raise ValueError(f"unknown prediction kind {kind!r}; choose one of {PREDICTION_KINDS}")
        from .processes import FlowPath

        if isinstance(process, FlowPath) and kind != "velocity":
            # alpha(1) = 0 makes x0 unidentifiable at the source end and f, g^2 singular there
            raise ValueError(f"a FlowPath model predicts the velocity, not {kind!r}")
        self.fn = fn
        self.process = process
        self.kind = kind
        self.space = space or EuclideanSpace()
        #: number of network evaluations so far (NFE)
        self.nfe = 0

    def _coeffs(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        alpha, sigma = self.process.marginal(t)
        return self.space.expand(alpha, x).to(x.dtype), self.space.expand(sigma, x).to(x.dtype)

    def _dcoeffs(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        da, ds = self.process.marginal_derivative(t)
        return self.space.expand(da, x).to(x.dtype), self.space.expand(ds, x).to(x.dtype)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        """Raw prediction of the declared kind."""
        self.nfe += 1
        return self.fn(x, t)

    def _from_velocity(self, x: Tensor, t: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """``(x0, eps)`` from ``x = alpha x0 + sigma eps`` and ``v = alpha' x0 + sigma' eps``."""
        alpha, sigma = self._coeffs(x, t)
        da, ds = self._dcoeffs(x, t)
        det = alpha * ds - da * sigma
        return (ds * x - sigma * v) / det, (alpha * v - da * x) / det

    def eps(self, x: Tensor, t: Tensor) -> Tensor:
        pred = self(x, t)
        if self.kind == "eps":
            return pred
        if self.kind == "velocity":
            return self._from_velocity(x, t, pred)[1]
        alpha, sigma = self._coeffs(x, t)
        if self.kind == "x0":
            return (x - alpha * pred) / sigma
        return -sigma * pred

    def x0(self, x: Tensor, t: Tensor) -> Tensor:
        pred = self(x, t)
        if self.kind == "x0":
            return pred
        if self.kind == "velocity":
            return self._from_velocity(x, t, pred)[0]
        alpha, sigma = self._coeffs(x, t)
        if self.kind == "eps":
            return (x - sigma * pred) / alpha
        return (x + sigma**2 * pred) / alpha

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        pred = self(x, t)
        if self.kind == "score":
            return pred
        _, sigma = self._coeffs(x, t)
        if self.kind == "velocity":
            return -self._from_velocity(x, t, pred)[1] / sigma
        alpha, _ = self._coeffs(x, t)
        if self.kind == "eps":
            return -pred / sigma
        return -(x - alpha * pred) / sigma**2

    def velocity(self, x: Tensor, t: Tensor) -> Tensor:
        """Probability-flow ODE velocity ``f(t) x - g(t)^2 / 2 * score`` (for a Gaussian process this equals
        ``alpha' x0_hat + sigma' eps_hat``); a velocity model's own prediction is returned as it is."""
        if self.kind == "velocity":
            return self(x, t)
        f = self.space.expand(self.process.f(t), x).to(x.dtype)
        g2 = self.space.expand(self.process.g2(t), x).to(x.dtype)
        return f * x - 0.5 * g2 * self.score(x, t)

    def batch_time(self, t: Tensor | float, x: Tensor) -> Tensor:
        """A scalar time as a per-sample vector ``[B]`` on ``x``'s device."""
        n = self.space.num_samples(x)
        return torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(()).expand(n).clone()
