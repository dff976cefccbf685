"""The denoiser: a network's prediction plus the process it was trained on.

A backbone predicts one *kind* of quantity (``eps``, ``x0`` or ``score``) and never knows which process
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

PREDICTION_KINDS = ("eps", "x0", "score")


class Denoiser:
    """Wraps ``fn(x_t [*], t [B]) -> prediction [*]`` of a declared ``kind``.

    Args:
        fn: the network (or an exact function); ``t`` is per sample, shape ``[B]``.
        process: the noise process that defines ``alpha(t)``, ``sigma(t)``.
        kind: what ``fn`` predicts: ``eps`` (noise), ``x0`` (clean state) or ``score`` (grad log p_t).
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
        self.fn = fn
        self.process = process
        self.kind = kind
        self.space = space or EuclideanSpace()
        #: number of network evaluations so far (NFE)
        self.nfe = 0

    def _coeffs(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        alpha, sigma = self.process.marginal(t)
        return self.space.expand(alpha, x).to(x.dtype), self.space.expand(sigma, x).to(x.dtype)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        """Raw prediction of the declared kind."""
        self.nfe += 1
        return self.fn(x, t)

    def eps(self, x: Tensor, t: Tensor) -> Tensor:
        pred = self(x, t)
        if self.kind == "eps":
            return pred
        alpha, sigma = self._coeffs(x, t)
        if self.kind == "x0":
            return (x - alpha * pred) / sigma
        return -sigma * pred

    def x0(self, x: Tensor, t: Tensor) -> Tensor:
        pred = self(x, t)
        if self.kind == "x0":
            return pred
        alpha, sigma = self._coeffs(x, t)
        if self.kind == "eps":
            return (x - sigma * pred) / alpha
        return (x + sigma**2 * pred) / alpha

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        pred = self(x, t)
        if self.kind == "score":
            return pred
        alpha, sigma = self._coeffs(x, t)
        if self.kind == "eps":
            return -pred / sigma
        return -(x - alpha * pred) / sigma**2

    def velocity(self, x: Tensor, t: Tensor) -> Tensor:
        """Probability-flow ODE velocity ``f(t) x - g(t)^2 / 2 * score``."""
        f = self.space.expand(self.process.f(t), x).to(x.dtype)
        g2 = self.space.expand(self.process.g2(t), x).to(x.dtype)
        return f * x - 0.5 * g2 * self.score(x, t)

    def batch_time(self, t: Tensor | float, x: Tensor) -> Tensor:
        """A scalar time as a per-sample vector ``[B]`` on ``x``'s device."""
        n = self.space.num_samples(x)
        return torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(()).expand(n).clone()
