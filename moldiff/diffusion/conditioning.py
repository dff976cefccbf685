"""Conditional models and classifier-free guidance (Ho & Salimans 2022), for any state and any sampler.

A conditional backbone takes ``cond`` as a third argument (see :class:`~moldiff.diffusion.denoiser.Denoiser`):
a tensor whose first dimension runs over the samples (a global vector ``[B, C]``) or over the state's rows
(per-node features ``[N, C]``, per-pixel ``[B, C, H, W]``), as the backbone documents.  The *null condition*
of classifier-free guidance is written two ways:

* ``cond=None`` -- the whole batch is unconditional (what :class:`ClassifierFreeGuidance` uses);
* rows filled with NaN -- those samples are unconditional (what :func:`drop_condition` makes in training, so
  one network learns both ``p(x | c)`` and ``p(x)``).  :func:`missing_condition` finds them, and
  :class:`moldiff.nn.ConditionEmbedding` maps them (and ``None``) to a learned null embedding.

Guidance is one :class:`Denoiser` wrapper, so every sampler (and the posterior samplers of
:mod:`moldiff.diffusion.guidance`, which wrap a denoiser in turn) samples the guided model unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .denoiser import Denoiser

__all__ = ["ClassifierFreeGuidance", "drop_condition", "missing_condition"]


def drop_condition(cond: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """``cond`` with each row (first dimension) replaced by NaN -- the null condition -- with probability ``p``
    (classifier-free guidance's condition dropout in training).  ``p = 0`` returns ``cond`` itself."""
    if not 0 <= p <= 1:
        raise ValueError(f"the condition dropout must be in [0, 1], got {p}")
    if p == 0:
        return cond
    drop = torch.rand(cond.shape[0], generator=generator, device=cond.device) < p
    return torch.where(drop.reshape(-1, *([1] * (cond.dim() - 1))), torch.full_like(cond, float("nan")), cond)


def missing_condition(cond: Tensor) -> Tensor:
    """``[R]`` bool: which rows of ``cond`` are the null condition (all NaN).  A row that is only partly NaN is a
    ``ValueError`` -- a broken condition, not a dropped one."""
    nan = torch.isnan(cond.reshape(cond.shape[0], -1))
    missing = nan.all(-1)
    if bool((nan.any(-1) & ~missing).any()):
        raise ValueError("a condition row is partly NaN: a dropped condition is a row of NaN, anything else is an "
                         "error in the condition values")
    return missing


class ClassifierFreeGuidance(Denoiser):
    """``model`` guided with scale ``w``: prediction ``(1 + w) model(x, t, cond) - w model(x, t, None)``.

    ``w = 0`` is the conditional model, ``w > 0`` sharpens towards the condition (Ho & Salimans 2022's
    ``eps~ = (1 + w) eps(c) - w eps(0)``).  The combination is taken in the model's own prediction kind; every
    kind is affine in the prediction at fixed ``(x, t)``, so it is the same guidance in ``eps``, ``x0``, score or
    velocity.  Two model evaluations per call with a condition and ``w > 0``; one otherwise.

    Args:
        model: a conditional :class:`Denoiser` trained with condition dropout.
        scale: ``w >= 0``.
    """

    def __init__(self, model: Denoiser, scale: float):
        if not scale >= 0:
            raise ValueError(f"the guidance scale must be >= 0, got {scale}")
        super().__init__(self._guided, model.process, kind=model.kind, space=model.space)
        self.model = model
        self.scale = float(scale)

    def _guided(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        if cond is None:
            return self.model(x, t)
        conditional = self.model(x, t, cond)
        if self.scale == 0:
            return conditional
        return conditional + self.scale * (conditional - self.model(x, t))
