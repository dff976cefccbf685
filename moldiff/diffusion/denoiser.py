"""The denoiser: a network's prediction plus the process it was trained on.

A backbone predicts one *kind* of quantity (``eps``, ``x0``, ``score`` or the probability-flow ``velocity``
``dx_t/dt`` that flow matching regresses) and never knows which process
trained it.  :class:`Denoiser` declares that kind once and converts on demand, so a sampler asks for
``model.eps``, ``model.x0`` or ``model.score`` -- whatever its update needs (NVlabs/edm's
preconditioner idea).  It also carries the state's :class:`~moldiff.diffusion.spaces.Space`, which the
samplers use for noise and per-sample reductions.

Conditioning: every method takes an optional ``cond`` (a global vector ``[B, C]``, per-node or per-pixel
features, whatever the backbone accepts) and hands it to the backbone unchanged -- ``fn(x, t)`` when ``cond``
is None, ``fn(x, t, cond)`` otherwise -- so every sampler passes a condition through to the network
(k-diffusion's ``extra_args``).  ``None`` is the unconditional model (classifier-free guidance's null
condition; see :mod:`moldiff.diffusion.conditioning`).

Preconditioning: with ``precond`` (:class:`~moldiff.diffusion.preconditioning.EDMPreconditioning`) ``fn`` is
EDM's raw network ``F`` and the denoiser's prediction is ``x0 = c_skip x_t / alpha + c_out F(c_in x_t / alpha,
c_noise)`` (kind ``x0``).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .preconditioning import EDMPreconditioning
from .processes import Process
from .spaces import EuclideanSpace, Space
from .processes import FlowPath

__all__ = ["Denoiser", "PREDICTION_KINDS"]

PREDICTION_KINDS = ("eps", "x0", "score", "velocity")


class Denoiser:
    """Wraps ``fn(x_t [*], t [B][, cond]) -> prediction [*]`` of a declared ``kind``.

    Args:
        fn: the network (or an exact function); ``t`` is per sample, shape ``[B]``; called with a third
            argument ``cond`` only when a condition is given.
        process: the noise process that defines ``alpha(t)``, ``sigma(t)``.
        kind: what ``fn`` predicts: ``eps`` (noise), ``x0`` (clean state), ``score`` (grad log p_t) or
            ``velocity`` (``dx_t/dt``; the conversions assume the process's Gaussian marginal, so for a model
            trained with a non-independent coupling only ``velocity`` itself -- ODE sampling -- is exact).
        space: the state space (default: Euclidean states ``[B, *event]``).
        precond: EDM's preconditioning (``fn`` is then the raw network ``F``, fed ``c_noise`` as its time; the
            prediction is ``x0``, so ``kind`` must be ``x0``).
    """

    def __init__(
        self,
        fn: Callable[..., Tensor],
        process: Process,
        kind: str = "eps",
        space: Space | None = None,
        precond: EDMPreconditioning | None = None,
    ):
        if kind not in PREDICTION_KINDS:
            raise ValueError(f"unknown prediction kind {kind!r}; choose one of {PREDICTION_KINDS}")

        if isinstance(process, FlowPath) and kind != "velocity":
            # alpha(1) = 0 makes x0 unidentifiable at the source end and f, g^2 singular there
            raise ValueError(f"a FlowPath model predicts the velocity, not {kind!r}")
        if precond is not None and kind != "x0":
            raise ValueError(f"a preconditioned denoiser predicts x0 (EDM's D = c_skip x + c_out F); got kind {kind!r}")
        self.fn = fn
        self.process = process
        self.kind = kind
        self.space = space or EuclideanSpace()
        self.precond = precond
        #: number of network evaluations so far (NFE)
        self.nfe = 0

    def _coeffs(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        alpha, sigma = self.process.marginal(t)
        return self.space.expand(alpha, x).to(x.dtype), self.space.expand(sigma, x).to(x.dtype)

    def _dcoeffs(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        da, ds = self.process.marginal_derivative(t)
        return self.space.expand(da, x).to(x.dtype), self.space.expand(ds, x).to(x.dtype)

    def __call__(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        """Raw prediction of the declared kind (with ``precond``: EDM's ``D(x; sigma)``)."""
        self.nfe += 1
        if self.precond is None:
            return self._net(x, t, cond)
        alpha, sigma = self.process.marginal(t)
        c = self.precond.coefficients(sigma / alpha)
        scaled = x / self.space.expand(alpha, x).to(x.dtype)
        out = self._net(self.space.expand(c.c_in, x).to(x.dtype) * scaled, c.c_noise.to(x.dtype), cond)
        return self.space.expand(c.c_skip, x).to(x.dtype) * scaled + self.space.expand(c.c_out, x).to(x.dtype) * out

    def _net(self, x: Tensor, t: Tensor, cond) -> Tensor:
        return self.fn(x, t) if cond is None else self.fn(x, t, cond)

    def _from_velocity(self, x: Tensor, t: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """``(x0, eps)`` from ``x = alpha x0 + sigma eps`` and ``v = alpha' x0 + sigma' eps``."""
        alpha, sigma = self._coeffs(x, t)
        da, ds = self._dcoeffs(x, t)
        det = alpha * ds - da * sigma
        return (ds * x - sigma * v) / det, (alpha * v - da * x) / det

    def eps(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        pred = self(x, t, cond)
        if self.kind == "eps":
            return pred
        if self.kind == "velocity":
            return self._from_velocity(x, t, pred)[1]
        alpha, sigma = self._coeffs(x, t)
        if self.kind == "x0":
            return (x - alpha * pred) / sigma
        return -sigma * pred

    def x0(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        pred = self(x, t, cond)
        if self.kind == "x0":
            return pred
        if self.kind == "velocity":
            return self._from_velocity(x, t, pred)[0]
        alpha, sigma = self._coeffs(x, t)
        if self.kind == "eps":
            return (x - sigma * pred) / alpha
        return (x + sigma**2 * pred) / alpha

    def score(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        pred = self(x, t, cond)
        if self.kind == "score":
            return pred
        _, sigma = self._coeffs(x, t)
        if self.kind == "velocity":
            return -self._from_velocity(x, t, pred)[1] / sigma
        alpha, _ = self._coeffs(x, t)
        if self.kind == "eps":
            return -pred / sigma
        return -(x - alpha * pred) / sigma**2

    def velocity(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        """Probability-flow ODE velocity ``f(t) x - g(t)^2 / 2 * score`` (for a Gaussian process this equals
        ``alpha' x0_hat + sigma' eps_hat``); a velocity model's own prediction is returned as it is."""
        if self.kind == "velocity":
            return self(x, t, cond)
        f = self.space.expand(self.process.f(t), x).to(x.dtype)
        g2 = self.space.expand(self.process.g2(t), x).to(x.dtype)
        return f * x - 0.5 * g2 * self.score(x, t, cond)

    def batch_time(self, t: Tensor | float, x: Tensor) -> Tensor:
        """A scalar time as a per-sample vector ``[B]`` on ``x``'s device."""
        n = self.space.num_samples(x)
        return torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(()).expand(n).clone()
