"""A small diffusion transformer over space-time patches of a window of fields (DiT blocks, adaLN-zero).

A window ``[B, T, C, H, W]`` (``T`` consecutive states of a ``C``-channel field) is cut into ``p x p`` patches per
state: ``T * (H / p) * (W / p)`` tokens of ``C p^2`` numbers, embedded linearly, plus a learned embedding of the
state's position in the window and one of the patch's position on the grid.  Every block is full
self-attention over all tokens of the window followed by an MLP, both modulated by the diffusion time through
adaptive layer norm with zero-initialised gates (Peebles & Xie 2023), so the network starts as the identity of its
embedding and outputs exactly zero.  Fields without a channel axis (``[B, T, H, W]``) are taken as ``C = 1``.

``attention="factorized"`` replaces the joint attention of each block by two: over the patches of one state
(space), then over the states of one patch position (time), as in TimeSformer's divided attention (Bertasius et
al. 2021) -- every token sees its own position's whole history in every block, which joint attention over ``T``
times more tokens has to learn to find.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .embeddings import SinusoidalEmbedding

__all__ = ["SpaceTimeTransformer"]


def _attention(x: Tensor, qkv: nn.Linear, heads: int) -> Tensor:
    """Multi-head self-attention of ``x [B, N, dim]`` (queries, keys and values from ``qkv``) -> ``[B, N, dim]``."""
    b, n, d = x.shape
    q, k, v = qkv(x).reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)


def _zero_mod(dim: int, outputs: int) -> nn.Sequential:
    mod = nn.Sequential(nn.SiLU(), nn.Linear(dim, outputs * dim))
    nn.init.zeros_(mod[-1].weight)
    nn.init.zeros_(mod[-1].bias)
    return mod


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
        self.mod = _zero_mod(dim, 6)

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        s1, c1, g1, s2, c2, g2 = self.mod(e)[:, None].chunk(6, dim=-1)
        h = h + g1 * self.proj(_attention(self.norm1(h) * (1 + c1) + s1, self.qkv, self.heads))
        return h + g2 * self.mlp(self.norm2(h) * (1 + c2) + s2)


class _FactorizedBlock(_Block):
    """A :class:`_Block` whose attention is divided: over the ``S`` patches of each state, then over the ``T``
    states of each patch position (tokens ``[B, T S, dim]``, state-major)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, window: int):
        super().__init__(dim, heads, mlp_ratio)
        self.window = window
        self.norm_t = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv_t = nn.Linear(dim, 3 * dim)
        self.proj_t = nn.Linear(dim, dim)
        self.mod = _zero_mod(dim, 9)

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        b, n, d = h.shape
        t, s = self.window, n // self.window
        s1, c1, g1, st, ct, gt, s2, c2, g2 = self.mod(e)[:, None].chunk(9, dim=-1)
        x = (self.norm1(h) * (1 + c1) + s1).reshape(b * t, s, d)  # space: the patches of one state
        h = h + g1 * self.proj(_attention(x, self.qkv, self.heads).reshape(b, n, d))
        x = (self.norm_t(h) * (1 + ct) + st).reshape(b, t, s, d).transpose(1, 2).reshape(b * s, t, d)  # time
        a = _attention(x, self.qkv_t, self.heads).reshape(b, s, t, d).transpose(1, 2).reshape(b, n, d)
        h = h + gt * self.proj_t(a)
        return h + g2 * self.mlp(self.norm2(h) * (1 + c2) + s2)


class SpaceTimeTransformer(nn.Module):
    """``(x [B, T, C, H, W] or [B, T, H, W], t [B]) -> same shape`` (see the module docstring).

    Args:
        window: ``T``, the states per window.
        channels: ``C`` (1 for fields given without a channel axis).
        height, width: the grid; both divisible by ``patch``.
        patch: patch side ``p``.
        dim, depth, heads: token width, blocks, attention heads (``dim`` divisible by ``heads``).
        attention: ``joint`` (every token attends to every token of the window) or ``factorized`` (space, then
            time, in every block).
        mlp_ratio: MLP hidden width over ``dim``.
        time_dim: sinusoidal embedding width of the diffusion time ``t`` in ``[0, 1]``.
    """

    @staticmethod
    def check_options(patch: int = 2, dim: int = 128, depth: int = 4, heads: int = 4, attention: str = "joint") -> None:
        """The value checks of this network's options (its constructor and config validation call them)."""
        if attention not in ("joint", "factorized"):
            raise ValueError(f"attention must be joint or factorized, got {attention!r}")
        if min(patch, dim, depth, heads) < 1:
            raise ValueError(f"patch, dim, depth and heads must all be >= 1, got {patch}, {dim}, {depth}, {heads}")
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")

    def __init__(self, window: int, channels: int, height: int, width: int, *, patch: int = 2, dim: int = 128,
                 depth: int = 4, heads: int = 4, mlp_ratio: float = 4.0, time_dim: int = 64, attention: str = "joint"):
        super().__init__()
        self.check_options(patch, dim, depth, heads, attention)
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
        self.blocks = nn.ModuleList(_Block(dim, heads, mlp_ratio) if attention == "joint" else
                                    _FactorizedBlock(dim, heads, mlp_ratio, window) for _ in range(depth))
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
