"""Time and condition embeddings."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..diffusion.conditioning import missing_condition

__all__ = ["SinusoidalEmbedding", "ConditionEmbedding"]


class SinusoidalEmbedding(nn.Module):
    """``t [B] -> [B, dim]``: sines and cosines of ``scale * t`` at geometric frequencies (Transformer style).

    ``scale = 1000`` maps ``t in [0, 1]`` onto the range DDPM networks were designed for.
    """

    def __init__(self, dim: int, scale: float = 1000.0, max_period: float = 10_000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"embedding dim must be even, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.scale = scale

    def forward(self, t: Tensor) -> Tensor:
        args = (self.scale * t.float())[:, None] * self.freqs[None]
        return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class ConditionEmbedding(nn.Module):
    """``cond [B, C] | None -> [B, dim]``: an MLP of a global condition vector, with a learned *null* embedding for
    the unconditional model -- ``cond=None`` (every sample) or rows of NaN (the samples whose condition was dropped
    by :func:`moldiff.diffusion.drop_condition`; classifier-free guidance trains both in one network).

    Args:
        cond_dim: ``C``.
        dim: output width.
    """

    def __init__(self, cond_dim: int, dim: int):
        super().__init__()
        if cond_dim < 1:
            raise ValueError(f"cond_dim must be >= 1, got {cond_dim}")
        self.cond_dim = cond_dim
        self.mlp = nn.Sequential(nn.Linear(cond_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.null = nn.Parameter(torch.zeros(dim))

    def forward(self, cond: Tensor | None, batch_size: int) -> Tensor:
        if cond is None:
            return self.null.expand(batch_size, -1)
        if cond.dim() != 2 or cond.shape != (batch_size, self.cond_dim):
            raise ValueError(f"expected a condition [B, C] = [{batch_size}, {self.cond_dim}], got {tuple(cond.shape)}")
        missing = missing_condition(cond)[:, None]
        emb = self.mlp(torch.where(missing, torch.zeros_like(cond), cond).to(self.null.dtype))
        return torch.where(missing, self.null.expand_as(emb), emb)
