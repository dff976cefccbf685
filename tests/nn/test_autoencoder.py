"""Field autoencoder: shapes, periodic shift equivariance (float32 and float64), argument validation; the radial
power spectrum against analytic single modes and Parseval; the reconstruction loss."""

from __future__ import annotations

import math

import pytest
import torch

from moldiff.nn import FieldAutoencoder, radial_power_spectrum, reconstruction_loss


def _ae(dtype=torch.float64, **kw) -> FieldAutoencoder:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return FieldAutoencoder(**kw).to(dtype).eval()


G = torch.Generator().manual_seed(0)


def test_shapes_and_compression():
    ae = _ae(torch.float32, in_channels=2, latent_channels=3, channels=(8, 16, 16))
    x = torch.randn(5, 2, 32, 48, generator=G)
    z = ae.encode(x)
    assert z.shape == (5, 3, 4, 6) and ae.latent_shape(32, 48) == (3, 4, 6)
    assert ae.decode(z).shape == x.shape and ae(x).shape == x.shape
    with pytest.raises(ValueError, match="divisible by 2\\^levels = 8"):
        ae.encode(torch.zeros(1, 2, 36, 32))
    with pytest.raises(ValueError, match="\\[B, 2, H, W\\]"):
        ae.encode(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="latents of shape \\[B, 3, h, w\\]"):
        ae.decode(torch.zeros(1, 4, 4, 4))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
def test_circular_autoencoder_commutes_with_coarse_shifts(dtype, tol):
    """A shift by a multiple of 2^levels pixels shifts the latent by one coarse pixel per 2^levels and the
    reconstruction by the full shift; an odd shift is not a symmetry (stride-2 convolutions)."""
    ae = _ae(dtype, channels=(8, 8), latent_channels=2)
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1), dtype=dtype)
    z, y = ae.encode(x), ae(x)
    xs = torch.roll(x, shifts=(4, -8), dims=(-2, -1))
    torch.testing.assert_close(ae.encode(xs), torch.roll(z, shifts=(1, -2), dims=(-2, -1)), atol=tol, rtol=tol)
    torch.testing.assert_close(ae(xs), torch.roll(y, shifts=(4, -8), dims=(-2, -1)), atol=tol, rtol=tol)
    odd = ae.encode(torch.roll(x, shifts=1, dims=-1))
    assert (odd - torch.roll(z, shifts=1, dims=-1)).abs().max() > 1e-3
    zeros = _ae(dtype, channels=(8, 8), latent_channels=2, padding_mode="zeros")
    assert (zeros.encode(xs) - torch.roll(zeros.encode(x), shifts=(1, -2), dims=(-2, -1))).abs().max() > 1e-3


def test_bad_arguments():
    with pytest.raises(ValueError, match="padding_mode"):
        FieldAutoencoder(padding_mode="reflect")
    with pytest.raises(ValueError, match="divisible by groups"):
        FieldAutoencoder(channels=(12,))
    with pytest.raises(ValueError, match=">= 1"):
        FieldAutoencoder(latent_channels=0)


def test_radial_power_spectrum_single_modes_and_parseval():
    n = 32
    i = torch.arange(n, dtype=torch.float64)
    mode = torch.cos(2 * math.pi * 3 * i / n)[None, :].expand(n, n)  # k = (0, 3): ring 3
    p = radial_power_spectrum(mode)
    assert p.shape == (n // 2 + 1,)
    torch.testing.assert_close(p[3], torch.tensor(n * n / 2, dtype=torch.float64))
    assert p.sum() - p[3] < 1e-9
    diag = torch.cos(2 * math.pi * (3 * i[:, None] + 4 * i[None, :]) / n)  # |k| = 5
    assert int(radial_power_spectrum(diag).argmax()) == 5
    # Parseval for a field without power beyond ring n/2 (a smooth random field), batched
    g = torch.Generator().manual_seed(0)
    coeff = torch.randn(2, 3, n, n, generator=g, dtype=torch.float64)
    k = torch.fft.fftfreq(n, 1 / n, dtype=torch.float64)
    smooth = torch.fft.ifft2(torch.fft.fft2(coeff) * ((k[:, None] ** 2 + k[None] ** 2) < 100)).real
    torch.testing.assert_close(radial_power_spectrum(smooth).sum(-1), n * n * smooth.square().mean((-2, -1)))



def test_radial_power_spectrum_of_half_precision_fields():
    """bf16 / fp16 fields (bf16 autocast on CUDA) are transformed in float32: torch has no half-precision FFT."""
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    for dtype in (torch.bfloat16, torch.float16):
        p = radial_power_spectrum(x.to(dtype))
        assert p.dtype == torch.float32
        torch.testing.assert_close(p, radial_power_spectrum(x.to(dtype).float()))


def test_reconstruction_loss():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 16, 16, generator=g, dtype=torch.float64)
    assert reconstruction_loss(x, x).abs().max() < 1e-12
    blurred = (x + torch.roll(x, 1, -1) + torch.roll(x, -1, -1)) / 3
    mse = (blurred - x).square().flatten(1).mean(1)
    torch.testing.assert_close(reconstruction_loss(blurred, x, spectrum_weight=0.0), mse)
    with_spectrum = reconstruction_loss(blurred, x)
    assert with_spectrum.shape == (4,) and (with_spectrum > mse + 0.01).all()  # the blur loses small scales
    # a pure phase shift keeps every ring's power: only the MSE sees it
    shifted = torch.roll(x, 3, -2)
    torch.testing.assert_close(reconstruction_loss(shifted, x), (shifted - x).square().flatten(1).mean(1))
