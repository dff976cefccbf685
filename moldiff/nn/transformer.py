"""A small diffusion transformer over space-time patches of a window of fields (DiT blocks, adaLN-zero).

A window ``[B, T, C, H, W]`` (``T`` consecutive states of a ``C``-channel field) is cut into ``p x p`` patches per
state: ``T * (H / p) * (W / p)`` tokens of ``C p^2`` numbers, embedded linearly, plus a learned embedding of the
state's position in the window and one of the patch's position on the grid.  Every block is full
self-attention over all tokens of the window followed by an MLP, both modulated by the diffusion time through
adaptive layer norm with zero-initialised gates (Peebles & Xie 2023), so the network starts as the identity of its
embedding and outputs exactly zero.  Fields without a channel axis (``[B, T, H, W]``) are taken as ``C = 1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .embeddings import SinusoidalEmbedding

__all__ = ["SpaceTimeTransformer"]


class _Block(nn.Module):
    """``(h [B, N, dim], e [B, dim]) -> [B, N, dim]``: adaLN-zero attention and MLP sub-blocks."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.mod = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.mod[-1].weight)
        nn.init.zeros_(self.mod[-1].bias)

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        b, n, d = h.shape
        s1, c1, g1, s2, c2, g2 = self.mod(e)[:, None].chunk(6, dim=-1)
        q, k, v = self.qkv(self.norm1(h) * (1 + c1) + s1).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        h = h + g1 * self.proj(a)
        return h + g2 * self.mlp(self.norm2(h) * (1 + c2) + s2)


class SpaceTimeTransformer(nn.Module):
    """``(x [B, T, C, H, W] or [B, T, H, W], t [B]) -> same shape`` (see the module docstring).

    Args:
        window: ``T``, the states per window.
        channels: ``C`` (1 for fields given without a channel axis).
        height, width: the grid; both divisible by ``patch``.
        patch: patch side ``p``.
        dim, depth, heads: token width, blocks, attention heads (``dim`` divisible by ``heads``).
        mlp_ratio: MLP hidden width over ``dim``.
        time_dim: sinusoidal embedding width of the diffusion time ``t`` in ``[0, 1]``.
    """

    @staticmethod
    def check_options(patch: int = 2, dim: int = 128, depth: int = 4, heads: int = 4) -> None:
        """The value checks of this network's options (its constructor and config validation call them)."""
        if min(patch, dim, depth, heads) < 1:
            raise ValueError(f"patch, dim, depth and heads must all be >= 1, got {patch}, {dim}, {depth}, {heads}")
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")

    def __init__(self, window: int, channels: int, height: int, width: int, *, patch: int = 2, dim: int = 128,
                 depth: int = 4, heads: int = 4, mlp_ratio: float = 4.0, time_dim: int = 64):
        super().__init__()
        self.check_options(patch, dim, depth, heads)
        if min(window, channels, height, width) < 1:
            raise ValueError("window, channels, height and width must all be >= 1")
        if height % patch or width % patch:
            raise ValueError(f"the grid {height} x {width} must be divisible by the patch size {patch}")
        self.window, self.channels, self.height, self.width, self.patch = window, channels, height, width, patch
        self.grid = (height // patch, width // patch)
        token = channels * patch * patch
        self.embed_in = nn.Linear(token, dim)
        self.pos_time = nn.Parameter(torch.randn(window, 1, dim) * 0.02)
        self.pos_space = nn.Parameter(torch.randn(1, self.grid[0] * self.grid[1], dim) * 0.02)
        self.embed_t = SinusoidalEmbedding(time_dim)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList(_Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mod = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.out = nn.Linear(dim, token)
        for layer in (self.mod[-1], self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        shape = x.shape
        if x.ndim == 4 and self.channels == 1:
            x = x[:, :, None]
        expected = (self.window, self.channels, self.height, self.width)
        if x.ndim != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected windows of shape [B, {', '.join(map(str, expected))}], got {tuple(shape)}")
        b, p, (gh, gw) = x.shape[0], self.patch, self.grid
        tokens = (x.reshape(b, self.window, self.channels, gh, p, gw, p).permute(0, 1, 3, 5, 2, 4, 6)
                  .reshape(b, self.window, gh * gw, -1))
        h = (self.embed_in(tokens) + self.pos_time + self.pos_space).reshape(b, self.window * gh * gw, -1)
        e = self.time_mlp(self.embed_t(t.reshape(-1).expand(b)).to(x.dtype))
        for blk in self.blocks:
            h = blk(h, e)
        shift, scale = self.mod(e)[:, None].chunk(2, dim=-1)
        y = self.out(self.norm(h) * (1 + scale) + shift)  # [B, T gh gw, C p p]
        y = (y.reshape(b, self.window, gh, gw, self.channels, p, p).permute(0, 1, 4, 2, 5, 3, 6)
             .reshape(b, self.window, self.channels, self.height, self.width))
        return y.reshape(shape)
