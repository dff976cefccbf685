"""A small time-conditioned 2D U-Net denoiser for (periodic) fields ``[B, C, H, W]``.

The field backbone for score-based data assimilation: a window of ``2k + 1`` consecutive states of a field
(e.g. Kolmogorov vorticity) is stacked along the channel axis (Rozet & Louppe 2023).

With ``padding_mode="circular"`` every spatial operation (3x3 convs, stride-2 downsampling, nearest
upsampling, GroupNorm, attention) commutes with periodic shifts on its own grid, so the network is exactly
equivariant to circular shifts of the input by multiples of ``2 ** (len(channels) - 1)`` pixels (one coarse
pixel at the lowest resolution).  Other shifts are *not* exact symmetries: the stride-2 convolutions sample
the even pixels only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .embeddings import SinusoidalEmbedding

__all__ = ["UNet"]

PADDING_MODES = ("circular", "zeros")


def _conv3(c_in: int, c_out: int, padding_mode: str, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, padding_mode=padding_mode)


class _ResBlock(nn.Module):
    """``(h [B, c_in, H, W], e [B, emb_dim]) -> [B, c_out, H, W]``: GroupNorm, SiLU, conv3x3, time
    scale/shift after the second GroupNorm (``norm(h) * (1 + scale) + shift``), SiLU, dropout, conv3x3;
    residual through a 1x1 conv when the channel count changes."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, padding_mode: str, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = _conv3(c_in, c_out, padding_mode)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.drop = nn.Dropout(dropout)
        self.conv2 = _conv3(c_out, c_out, padding_mode)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        y = self.conv1(self.act(self.norm1(h)))
        scale, shift = self.emb(e)[:, :, None, None].chunk(2, dim=1)
        y = self.norm2(y) * (1 + scale) + shift
        return self.skip(h) + self.conv2(self.drop(self.act(y)))


class _Attention(nn.Module):
    """``[B, c, H, W] -> [B, c, H, W]``: pre-norm multi-head self-attention over the ``H * W`` positions,
    with a residual connection (``gcd(c, 4)`` heads)."""

    def __init__(self, c: int, groups: int):
        super().__init__()
        self.heads = math.gcd(c, 4)
        self.norm = nn.GroupNorm(groups, c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, h: Tensor) -> Tensor:
        b, c, hh, ww = h.shape
        q, k, v = self.qkv(self.norm(h)).reshape(b, 3, self.heads, c // self.heads, hh * ww).unbind(1)
        y = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return h + self.proj(y.transpose(-1, -2).reshape(b, c, hh, ww))


class _Upsample(nn.Module):
    """``[B, c_in, H, W] -> [B, c_out, 2H, 2W]``: nearest-neighbour upsampling then a 3x3 conv."""

    def __init__(self, c_in: int, c_out: int, padding_mode: str):
        super().__init__()
        self.conv = _conv3(c_in, c_out, padding_mode)

    def forward(self, h: Tensor) -> Tensor:
        return self.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """``(x [B, C_in, H, W], t [B]) -> [B, C_out, H, W]``, ``t`` in ``[0, 1]`` (a scalar ``t`` is broadcast).

    ``len(channels)`` resolution levels with ``blocks_per_level`` residual blocks each (time-conditioned via
    a sinusoidal embedding and an MLP of width ``4 * channels[0]``); stride-2 3x3 conv downsampling,
    nearest + 3x3 conv upsampling, encoder activations concatenated into the decoder at every level; a
    middle (ResBlock, [self-attention if ``attention``], ResBlock) at the lowest resolution; GroupNorm +
    SiLU + 3x3 output conv, zero-initialised so the network outputs exactly 0 at initialisation.

    ``H`` and ``W`` must be divisible by ``2 ** (len(channels) - 1)``.  ``padding_mode`` is ``"circular"``
    (periodic domains; shift-equivariant, see the module docstring) or ``"zeros"``.  Every entry of
    ``channels`` must be divisible by ``groups`` (GroupNorm).
    """

    @staticmethod
    def check_options(channels: Sequence[int] = (32, 64, 128), blocks_per_level: int = 2, groups: int = 8,
                      dropout: float = 0.0) -> None:
        """The value checks of this network's options (its constructor and config validation call them)."""
        channels = tuple(channels)
        if not channels or not all(isinstance(c, int) and c >= 1 for c in channels):
            raise ValueError(f"channels must be a non-empty sequence of positive ints, got {channels}")
        if groups < 1 or any(c % groups for c in channels):
            raise ValueError(f"every entry of channels {channels} must be divisible by groups={groups}")
        if blocks_per_level < 1:
            raise ValueError(f"blocks_per_level must be >= 1, got {blocks_per_level}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")

    def __init__(self, in_channels: int, out_channels: int | None = None, channels: Sequence[int] = (32, 64, 128),
                 blocks_per_level: int = 2, time_dim: int = 64, padding_mode: str = "circular", groups: int = 8,
                 attention: bool = False, dropout: float = 0.0):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        channels = tuple(int(c) for c in channels)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
        self.check_options(channels, blocks_per_level, groups, dropout)
        self.in_channels, self.out_channels, self.channels = in_channels, out_channels, channels
        self.factor = 2 ** (len(channels) - 1)
        emb_dim = 4 * channels[0]

        def block(c_in: int, c_out: int) -> _ResBlock:
            return _ResBlock(c_in, c_out, emb_dim, groups, padding_mode, dropout)

        self.embed = SinusoidalEmbedding(time_dim)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.inp = _conv3(in_channels, channels[0], padding_mode)
        self.down_blocks, self.downs = nn.ModuleList(), nn.ModuleList()
        c = channels[0]
        for i, ci in enumerate(channels):
            self.down_blocks.append(nn.ModuleList(block(c if j == 0 else ci, ci) for j in range(blocks_per_level)))
            c = ci
            if i < len(channels) - 1:
                self.downs.append(_conv3(ci, ci, padding_mode, stride=2))
        self.mid1 = block(c, c)
        self.attn = _Attention(c, groups) if attention else nn.Identity()
        self.mid2 = block(c, c)
        self.ups, self.up_blocks = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(channels))):
            ci = channels[i]
            if i < len(channels) - 1:
                self.ups.append(_Upsample(c, ci, padding_mode))
            self.up_blocks.append(nn.ModuleList(block(2 * ci if j == 0 else ci, ci) for j in range(blocks_per_level)))
            c = ci
        self.out = nn.Sequential(nn.GroupNorm(groups, c), nn.SiLU(), _conv3(c, out_channels, padding_mode))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected x of shape [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        if x.shape[-2] % self.factor or x.shape[-1] % self.factor:
            raise ValueError(f"H and W must be divisible by 2**(levels-1) = {self.factor} for "
                             f"{len(self.channels)} levels, got x of shape {tuple(x.shape)}")
        e = self.time_mlp(self.embed(t.reshape(-1).expand(x.shape[0])).to(x.dtype))
        h = self.inp(x)
        skips = []
        for i, blocks in enumerate(self.down_blocks):
            for blk in blocks:
                h = blk(h, e)
            skips.append(h)
            if i < len(self.downs):
                h = self.downs[i](h)
        h = self.mid2(self.attn(self.mid1(h, e)), e)
        for i, blocks in enumerate(self.up_blocks):
            if i > 0:
                h = self.ups[i - 1](h)
            h = torch.cat([h, skips.pop()], dim=1)
            for blk in blocks:
                h = blk(h, e)
        return self.out(h)
