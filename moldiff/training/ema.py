"""Exponential moving average of a model's parameters."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

__all__ = ["EMA"]


class EMA:
    """Keeps ``shadow = d * shadow + (1 - d) * param`` after each optimiser step, with the warm-up
    ``d = min(decay, (1 + step) / (10 + step))`` (as in TensorFlow's and timm's EMA): without it the average
    keeps a weight ``decay^step`` on the initial network, e.g. 13 % after 2,000 steps at 0.999 -- for a
    zero-initialised output layer that shrinks every prediction by as much, which a sampler integrates into a
    badly over-dispersed sample.

    ``update(gate)`` takes an optional 0-d tensor (1 = apply, 0 = skip) so a skipped step needs no host
    synchronisation.  ``model`` is a full copy of the network (buffers included) for evaluation.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def decay_at(self, step: int | None) -> float:
        """The decay used at optimiser step ``step`` (``None``: no warm-up)."""
        return self.decay if step is None else min(self.decay, (1.0 + step) / (10.0 + step))

    def update(self, model: nn.Module, gate: Tensor | None = None, step: int | None = None) -> None:
        w = 1.0 - self.decay_at(step)
        weight = w if gate is None else gate.to(torch.float32) * w
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach().to(e.dtype), weight if isinstance(weight, float) else weight.to(e.dtype))
        for eb, b in zip(self.model.buffers(), model.buffers()):
            eb.copy_(b)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)
