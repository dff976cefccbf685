"""2D U-Net field backbone: shapes, zero-init, per-sample independence, periodic shift equivariance,
gradients, time conditioning, argument validation."""

from __future__ import annotations

import pytest
import torch

from moldiff.nn import UNet


def _model(*args, dtype=torch.float64, unzero: bool = True, **kw) -> UNet:
    """A UNet in eval mode, built under a fixed seed without touching the global RNG; with ``unzero`` the
    zero-initialised output conv gets random weights so the output depends on everything upstream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = UNet(*args, **kw)
        if unzero:
            with torch.no_grad():
                model.out[-1].weight.normal_(0.0, 0.1)
                model.out[-1].bias.normal_(0.0, 0.1)
    return model.to(dtype).eval()


def _data(gen: torch.Generator, b: int, c: int, h: int, w: int, dtype=torch.float64):
    x = torch.randn(b, c, h, w, generator=gen, dtype=dtype)
    t = torch.rand(b, generator=gen, dtype=dtype)
    return x, t


SHAPE_CONFIGS = [
    # (args, kwargs, input [B, C, H, W], expected output channels)
    ((5, 5), dict(channels=(32, 64, 128)), (2, 5, 64, 64), 5),
    ((2, 1), dict(channels=(16, 32)), (3, 2, 32, 24), 1),
    ((3,), dict(channels=(8, 16, 16), blocks_per_level=1, attention=True, padding_mode="zeros"), (1, 3, 16, 8), 3),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("config", range(len(SHAPE_CONFIGS)))
def test_shapes_and_zero_init(config, dtype):
    args, kw, shape, c_out = SHAPE_CONFIGS[config]
    gen = torch.Generator().manual_seed(0)
    x, t = _data(gen, *shape, dtype=dtype)
    model = _model(*args, dtype=dtype, unzero=False, **kw)
    y = model(x, t)
    assert y.shape == (shape[0], c_out, *shape[2:]) and y.dtype == dtype
    assert torch.equal(y, torch.zeros_like(y))  # zero-initialised output conv: training starts at 0
    with torch.no_grad():
        model.out[-1].weight.normal_(0.0, 0.1, generator=gen)
    y = model(x, t)
    assert torch.isfinite(y).all() and y.abs().max() > 1e-3


@pytest.mark.parametrize("attention", [False, True])
def test_batched_equals_alone(attention):
    """GroupNorm and attention act per sample, so sample ``i`` of a batch is the same as running it alone."""
    gen = torch.Generator().manual_seed(1)
    model = _model(4, 2, channels=(8, 16, 16), attention=attention, dropout=0.1)  # eval: dropout is off
    x, t = _data(gen, 3, 4, 16, 16)
    y = model(x, t)
    for i in range(3):
        alone = model(x[i : i + 1], t[i : i + 1])
        torch.testing.assert_close(y[i : i + 1], alone, rtol=1e-10, atol=1e-10)  # batched vs single: sums in another order on some CPUs' kernels (~1e-12 in float64); bugs are >> 1e-10


@pytest.mark.parametrize("attention", [False, True])
def test_circular_shift_equivariance(attention):
    """3 levels, circular padding: shifts by multiples of 2**(3-1) = 4 pixels commute with the network
    exactly (float64 round-off); shifts by 1 or 2 pixels do not (stride-2 downsampling keeps even pixels)."""
    gen = torch.Generator().manual_seed(2)
    model = _model(3, 3, channels=(8, 16, 16), attention=attention)
    x, t = _data(gen, 2, 3, 16, 24)
    y = model(x, t)
    assert y.abs().max() > 1e-2

    def shift_error(dh: int, dw: int) -> float:
        shifted = model(torch.roll(x, (dh, dw), dims=(2, 3)), t)
        return (shifted - torch.roll(y, (dh, dw), dims=(2, 3))).abs().max().item() / y.abs().max().item()

    for dh, dw in [(4, 0), (0, 8), (4, -4), (-8, 12), (16, 24)]:
        assert shift_error(dh, dw) < 1e-10, (dh, dw)
    for dh, dw in [(1, 0), (0, 1), (2, 2), (4, 2)]:
        assert shift_error(dh, dw) > 1e-3, (dh, dw)


def test_zero_padding_is_not_periodic():
    gen = torch.Generator().manual_seed(3)
    model = _model(3, 3, channels=(8, 16, 16), padding_mode="zeros")
    x, t = _data(gen, 1, 3, 16, 16)
    y = model(x, t)
    err = (model(torch.roll(x, (4, 4), dims=(2, 3)), t) - torch.roll(y, (4, 4), dims=(2, 3))).abs().max()
    assert err > 1e-3 * y.abs().max()


@pytest.mark.parametrize("attention", [False, True])
def test_gradient_reaches_every_parameter(attention):
    gen = torch.Generator().manual_seed(4)
    model = _model(3, 2, channels=(8, 16), attention=attention)
    x, t = _data(gen, 2, 3, 8, 8)
    model(x, t).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, f"no gradient reaches {name}"


def test_time_conditioning():
    gen = torch.Generator().manual_seed(5)
    model = _model(2, 2, channels=(8, 16))
    x, _ = _data(gen, 1, 2, 8, 8)
    x = x.expand(3, -1, -1, -1)
    y = model(x, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    for i, j in [(0, 1), (1, 2), (0, 2)]:
        assert (y[i] - y[j]).abs().max() > 1e-4 * y.abs().max()
    # a scalar t is broadcast over the batch
    torch.testing.assert_close(model(x, torch.tensor(0.5, dtype=torch.float64)),
                               model(x, torch.full((3,), 0.5, dtype=torch.float64)), rtol=0, atol=0)


def test_bad_arguments_raise_clear_errors():
    model = _model(2, channels=(8, 16, 16), dtype=torch.float32, unzero=False)
    t = torch.zeros(1)
    with pytest.raises(ValueError, match=r"divisible by 2\*\*\(levels-1\) = 4.*\(1, 2, 18, 16\)"):
        model(torch.zeros(1, 2, 18, 16), t)
    with pytest.raises(ValueError, match=r"\(1, 2, 16, 6\)"):
        model(torch.zeros(1, 2, 16, 6), t)
    with pytest.raises(ValueError, match=r"expected x of shape \[B, 2, H, W\], got \(1, 3, 16, 16\)"):
        model(torch.zeros(1, 3, 16, 16), t)
    with pytest.raises(ValueError, match=r"\[B, 2, H, W\]"):
        model(torch.zeros(2, 16, 16), t)
    with pytest.raises(ValueError, match="padding_mode must be one of.*'periodic'"):
        UNet(2, padding_mode="periodic")
    with pytest.raises(ValueError, match="divisible by groups=8"):
        UNet(2, channels=(8, 12))
    with pytest.raises(ValueError, match="channels must be a non-empty"):
        UNet(2, channels=())
    with pytest.raises(ValueError, match="blocks_per_level"):
        UNet(2, blocks_per_level=0)
    with pytest.raises(ValueError, match="dropout"):
        UNet(2, dropout=1.0)
    with pytest.raises(ValueError, match="even"):
        UNet(2, time_dim=33)


def test_compiles_without_graph_breaks():
    """torch.compile-friendly: dynamo traces forward as a single graph (eager backend: no C++ compiler)."""
    gen = torch.Generator().manual_seed(6)
    model = _model(2, 2, channels=(8, 16), attention=True)
    x, t = _data(gen, 2, 2, 8, 8)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, t), model(x, t), rtol=1e-10, atol=1e-10)  # fused kernels reorder sums; a wrong graph is >> 1e-10
    torch._dynamo.reset()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_256():
    gen = torch.Generator().manual_seed(7)
    model = _model(5, 5, channels=(32, 64, 128), attention=True, dtype=torch.float32)
    x, t = _data(gen, 2, 5, 256, 256, dtype=torch.float32)
    y = model(x, t)
    y_cuda = model.cuda()(x.cuda(), t.cuda())
    torch.testing.assert_close(y_cuda.cpu(), y, rtol=1e-3, atol=1e-3 * y.abs().max().item())
