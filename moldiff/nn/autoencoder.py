"""A convolutional autoencoder for fields ``[B, C, H, W]`` on a periodic or bounded grid, and its loss.

Domain-free: any state with ``C`` channels on an ``H x W`` grid.  The encoder halves the resolution
``levels`` times (stride-2 3x3 convolutions, residual blocks in between) and ends in a 1x1 convolution to
``latent_channels``; the decoder mirrors it with nearest-neighbour upsampling.  A 64 x 64 vorticity field
with ``levels=3, latent_channels=4`` becomes ``[4, 8, 8]``: 16x fewer numbers.

With ``padding_mode="circular"`` (periodic domains) every operation commutes with circular shifts on its own
grid, so a shift of the input by a multiple of ``2 ** levels`` pixels shifts the latent by that multiple
divided by ``2 ** levels`` (and the reconstruction by the full shift).  ``"zeros"`` is for bounded grids.

:func:`radial_power_spectrum` and :func:`reconstruction_loss` (mean squared error plus a log-spectrum term
per radial wavenumber band) are the pieces a field autoencoder is trained and judged with.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["FieldAutoencoder", "radial_power_spectrum", "reconstruction_loss"]

PADDING_MODES = ("circular", "zeros")


def _conv3(c_in: int, c_out: int, padding_mode: str, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, padding_mode=padding_mode)


class _Block(nn.Module):
    """``[B, c, H, W] -> [B, c, H, W]``: x + conv(SiLU(GN(conv(SiLU(GN(x))))))."""

    def __init__(self, c: int, groups: int, padding_mode: str):
        super().__init__()
        self.net = nn.Sequential(nn.GroupNorm(groups, c), nn.SiLU(), _conv3(c, c, padding_mode),
                                 nn.GroupNorm(groups, c), nn.SiLU(), _conv3(c, c, padding_mode))

    def forward(self, h: Tensor) -> Tensor:
        return h + self.net(h)


class FieldAutoencoder(nn.Module):
    """``encode: [B, C, H, W] -> [B, latent_channels, H / 2^L, W / 2^L]``, ``decode`` back, ``forward`` both.

    Args:
        in_channels: ``C``.
        latent_channels: channels of the latent grid.
        channels: width per level, finest first (``len(channels)`` = the number of halvings ``L``).
        blocks: residual blocks per level.
        padding_mode: ``circular`` (periodic) or ``zeros`` (bounded).
        groups: GroupNorm groups (must divide every entry of ``channels``).
    """

    def __init__(self, in_channels: int = 1, latent_channels: int = 4, channels: Sequence[int] = (32, 64, 128),
                 blocks: int = 1, padding_mode: str = "circular", groups: int = 8):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        if min(in_channels, latent_channels) < 1 or not channels or min(channels) < 1 or blocks < 0:
            raise ValueError("in_channels, latent_channels and every entry of channels must be >= 1, blocks >= 0")
        if any(c % groups for c in channels):
            raise ValueError(f"every entry of channels {channels} must be divisible by groups={groups}")
        self.in_channels, self.latent_channels, self.channels = in_channels, latent_channels, channels
        self.factor = 2 ** len(channels)
        enc: list[nn.Module] = [_conv3(in_channels, channels[0], padding_mode)]
        for i, c in enumerate(channels):
            enc += [_Block(c, groups, padding_mode) for _ in range(blocks)]
            enc.append(_conv3(c, channels[min(i + 1, len(channels) - 1)], padding_mode, stride=2))
        enc += [_Block(channels[-1], groups, padding_mode), nn.GroupNorm(groups, channels[-1]), nn.SiLU(),
                nn.Conv2d(channels[-1], latent_channels, 1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(latent_channels, channels[-1], 1), _Block(channels[-1], groups, padding_mode)]
        for i in reversed(range(len(channels))):
            dec += [nn.Upsample(scale_factor=2.0, mode="nearest"), _conv3(channels[min(i + 1, len(channels) - 1)],
                                                                          channels[i], padding_mode)]
            dec += [_Block(channels[i], groups, padding_mode) for _ in range(blocks)]
        dec += [nn.GroupNorm(groups, channels[0]), nn.SiLU(), _conv3(channels[0], in_channels, padding_mode)]
        self.decoder = nn.Sequential(*dec)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """``(latent_channels, H / 2^L, W / 2^L)`` for an ``H x W`` grid (``ValueError`` if not divisible)."""
        if height % self.factor or width % self.factor:
            raise ValueError(f"the grid {height} x {width} must be divisible by 2^levels = {self.factor}")
        return self.latent_channels, height // self.factor, width // self.factor

    def encode(self, x: Tensor) -> Tensor:
        """``[B, C, H, W] -> [B, latent_channels, H / 2^L, W / 2^L]``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected fields of shape [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        self.latent_shape(*x.shape[-2:])
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """``[B, latent_channels, h, w] -> [B, C, h 2^L, w 2^L]``."""
        if z.ndim != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(f"expected latents of shape [B, {self.latent_channels}, h, w], got {tuple(z.shape)}")
        return self.decoder(z)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))


def radial_power_spectrum(x: Tensor, bins: int | None = None) -> Tensor:
    """Power ``|FFT(x)|^2`` summed over rings of integer radial wavenumber: ``[..., H, W] -> [..., K]``.

    Ring ``k`` holds the modes with ``k - 0.5 <= |(k_y, k_x)| < k + 0.5`` (integer wavenumbers of the
    ``H x W`` periodic grid), ``k = 0 .. K - 1`` with ``K = bins`` or ``min(H, W) // 2 + 1``; the
    normalisation is Parseval's (``sum_k P_k = H W mean(x^2)`` when no power lies beyond ring ``K - 1``: the
    corner modes of the grid are left out).  Differentiable."""
    if x.dtype in (torch.float16, torch.bfloat16):  # no half-precision FFT of any size (bf16 autocast on CUDA)
        x = x.float()
    h, w = x.shape[-2:]
    k_max = bins or min(h, w) // 2 + 1
    ky = torch.fft.fftfreq(h, 1.0 / h, device=x.device)
    kx = torch.fft.fftfreq(w, 1.0 / w, device=x.device)
    ring = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2).round().long().clamp(max=k_max)  # k_max: dropped
    power = torch.fft.fft2(x).abs().square() / (h * w)
    out = torch.zeros(*x.shape[:-2], k_max + 1, dtype=power.dtype, device=x.device)
    out.index_add_(-1, ring.flatten(), power.flatten(-2))
    return out[..., :k_max]


def reconstruction_loss(x_hat: Tensor, x: Tensor, *, spectrum_weight: float = 0.1, floor: float = 1e-3) -> Tensor:
    """Per-sample loss ``[B]`` for fields ``[B, C, H, W]``: the mean squared error plus ``spectrum_weight`` times
    the mean over channels and radial wavenumbers ``k >= 1`` of ``(log(P_hat_k + f) - log(P_k + f))^2`` -- relative
    errors of the power spectrum, so that small scales count as much as large ones, which the MSE alone neglects.
    ``f = floor * mean_k P_k`` per sample and channel keeps rings the data leave empty (beyond a dealiasing cut-off)
    from dominating."""
    mse = (x_hat - x).square().flatten(1).mean(1)
    if spectrum_weight == 0:
        return mse
    p_hat, p = radial_power_spectrum(x_hat)[..., 1:], radial_power_spectrum(x)[..., 1:]
    f = floor * p.mean(-1, keepdim=True).detach() + torch.finfo(p.dtype).tiny
    log_err = (torch.log(p_hat + f) - torch.log(p + f)).square().flatten(1).mean(1)
    return mse + spectrum_weight * log_err
