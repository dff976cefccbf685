"""E3Denoiser (e3nn tensor products): E(3) equivariance in float64 and float32 for lmax 1 and 2, SE(3) only --
rotations yes, reflections deliberately not -- with parity off, translations, permutations, batch consistency,
radius graphs, a condition."""

from __future__ import annotations

import pytest
import torch

from moldiff.nn.e3 import E3Denoiser
from moldiff.testing import assert_batch_consistent, assert_equivariant

pytestmark = pytest.mark.usefixtures("global_rng")

SIZES = [3, 6, 5]


def _inputs(dtype, g, features=2):
    n = sum(SIZES)
    batch = torch.repeat_interleave(torch.arange(len(SIZES)), torch.tensor(SIZES))
    x = torch.randn(n, 3 + features, generator=g, dtype=torch.float64) * 1.5
    return x.to(dtype), batch


def _net(dtype, **kw):
    torch.manual_seed(0)
    kw = {"mul": 8, "layers": 2, **kw}
    return E3Denoiser(2, **kw).to(dtype).eval()


def _fn(net, batch, cond=None):
    t = torch.linspace(0.2, 0.8, len(SIZES))

    def fn(x):
        return net(x, t.to(x.dtype), batch, len(SIZES), cond=cond)

    return fn


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("lmax", [1, 2])
def test_e3_equivariance(dtype, lmax):
    g = torch.Generator().manual_seed(1)
    x, batch = _inputs(dtype, g)
    fn = _fn(_net(dtype, lmax=lmax), batch)
    y = fn(x)
    assert y[:, :3].abs().max() > 1e-3 and y[:, 3:].abs().max() > 1e-3  # both outputs are really computed
    assert_equivariant(fn, x, batch, generator=g, translation="invariant")


def test_without_parity_rotations_hold_and_reflections_deliberately_do_not():
    g = torch.Generator().manual_seed(2)
    x, batch = _inputs(torch.float64, g)
    fn = _fn(_net(torch.float64, parity=False, lmax=2), batch)
    with pytest.raises(AssertionError, match="reflection"):
        assert_equivariant(fn, x, batch, generator=g, translation="invariant")
    # rotations (det +1) alone: equivariant
    from moldiff.testing import random_rotation

    rot = random_rotation(torch.float64, g)
    y = fn(x)
    y_rot = fn(torch.cat([x[:, :3] @ rot.T, x[:, 3:]], 1))
    torch.testing.assert_close(y_rot[:, :3], y[:, :3] @ rot.T)
    torch.testing.assert_close(y_rot[:, 3:], y[:, 3:])


def test_batched_equals_per_graph_and_a_radius_graph_is_used():
    g = torch.Generator().manual_seed(3)
    x, _ = _inputs(torch.float64, g)
    for cutoff in (None, 2.5):
        net = _net(torch.float64, cutoff=cutoff)

        def fn_batched(xx, bb, ng):
            return net(xx, torch.full((ng,), 0.5, dtype=xx.dtype), bb, ng)

        assert_batch_consistent(fn_batched, list(torch.split(x, SIZES)))
    batch = torch.repeat_interleave(torch.arange(len(SIZES)), torch.tensor(SIZES))
    full, cut = _fn(_net(torch.float64), batch)(x), _fn(_net(torch.float64, cutoff=2.5), batch)(x)
    assert (full - cut).abs().max() > 1e-6  # the cutoff removes messages


def test_a_condition_changes_the_output_and_nan_rows_are_unconditional():
    g = torch.Generator().manual_seed(4)
    x, batch = _inputs(torch.float64, g)
    net = _net(torch.float64, cond_dim=1)
    for p in net.cond.parameters():
        torch.nn.init.normal_(p, std=0.5)
    cond = torch.tensor([[1.0], [-1.0], [float("nan")]], dtype=torch.float64)
    y, y2, y0 = _fn(net, batch, cond)(x), _fn(net, batch, 2 * cond)(x), _fn(net, batch, None)(x)
    assert (y[batch == 0] - y2[batch == 0]).abs().max() > 1e-4
    torch.testing.assert_close(y[batch == 2], y0[batch == 2])
    assert_equivariant(_fn(net, batch, cond), x, batch, generator=g, translation="invariant")
    with pytest.raises(ValueError, match="without a condition"):
        _fn(_net(torch.float64), batch, cond)(x)
