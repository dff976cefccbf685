"""Space-time transformer: shapes, zero output at initialisation, per-sample independence, time conditioning,
argument validation."""

from __future__ import annotations

import pytest
import torch

from moldiff.nn import SpaceTimeTransformer
from moldiff.nn.transformer import _FactorizedBlock


def _model(unzero: bool = True, **kw) -> SpaceTimeTransformer:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = SpaceTimeTransformer(**kw)
        if unzero:  # the zero-initialised gates and output make the network exactly 0: give them weights
            with torch.no_grad():
                for p in m.parameters():
                    if not p.abs().sum():
                        p.normal_(0.0, 0.1)
    return m.double().eval()


@pytest.mark.parametrize("attention", ["joint", "factorized"])
def test_shapes_zero_init_and_channelless_fields(attention):
    g = torch.Generator().manual_seed(0)
    m = _model(unzero=False, window=3, channels=4, height=8, width=8, patch=2, dim=32, depth=2, heads=4,
               attention=attention)
    x = torch.randn(5, 3, 4, 8, 8, generator=g, dtype=torch.float64)
    out = m(x, torch.rand(5, generator=g, dtype=torch.float64))
    assert out.shape == x.shape and out.abs().max() == 0
    m1 = _model(window=5, channels=1, height=16, width=8, patch=4, dim=16, depth=1, heads=2, attention=attention)
    assert m1(torch.randn(2, 5, 16, 8, generator=g, dtype=torch.float64), torch.rand(2, generator=g, dtype=torch.float64)).shape == (2, 5, 16, 8)


@pytest.mark.parametrize("attention", ["joint", "factorized"])
def test_per_sample_independence_and_time_conditioning(attention):
    m = _model(window=3, channels=2, height=8, width=8, patch=2, dim=32, depth=2, heads=4, attention=attention)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 2, 8, 8, generator=g, dtype=torch.float64)
    t = torch.rand(4, generator=g, dtype=torch.float64)
    out = m(x, t)
    for b in range(4):
        torch.testing.assert_close(m(x[b : b + 1], t[b : b + 1])[0], out[b], rtol=1e-10, atol=1e-10)
    assert (m(x, t.flip(0)) - out).abs().max() > 1e-4
    # every state of the window sees every other: the output at state 0 changes with state 2
    x2 = x.clone()
    x2[:, 2] += 1.0
    assert (m(x2, t)[:, 0] - out[:, 0]).abs().max() > 1e-4


def _gated_block(gate: str) -> _FactorizedBlock:
    """A factorised block (3 states of 4 patches, dim 8) whose only open gate is ``gate``: space, time or mlp."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        blk = _FactorizedBlock(8, 2, 2.0, window=3).double()
    with torch.no_grad():
        bias = blk.mod[-1].bias.view(9, 8)  # s1, c1, g1 (space), st, ct, gt (time), s2, c2, g2 (mlp)
        bias[{"space": 2, "time": 5, "mlp": 8}[gate]] = 1.0
    return blk


def test_factorized_attention_mixes_within_a_state_then_within_a_patch_position():
    g = torch.Generator().manual_seed(3)
    h = torch.randn(2, 12, 8, generator=g, dtype=torch.float64)  # [B, T S, dim], state-major
    e = torch.randn(2, 8, generator=g, dtype=torch.float64)
    changed = lambda blk, h2: ((blk(h2, e) - blk(h, e)).abs().amax((0, 2)) > 0).reshape(3, 4)  # noqa: E731
    h_state = h.clone()
    h_state[:, 4:8] += 1.0  # every patch of state 1
    h_patch = h.clone()
    h_patch[:, [2, 6, 10]] += 1.0  # patch position 2 of every state
    space, time = _gated_block("space"), _gated_block("time")
    assert changed(space, h_state).tolist() == [[False] * 4, [True] * 4, [False] * 4]  # space: only state 1
    assert changed(time, h_patch).tolist() == [[False, False, True, False]] * 3  # time: only patch position 2
    # and across: space attention spreads a patch over its own state; time attention a state over its own patches
    assert changed(space, h_patch).all() and changed(time, h_state).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="divisible by the patch"):
        SpaceTimeTransformer(3, 1, 10, 8, patch=4)
    with pytest.raises(ValueError, match="divisible by heads"):
        SpaceTimeTransformer(3, 1, 8, 8, dim=30, heads=4)
    with pytest.raises(ValueError, match="attention must be joint or factorized, got 'axial'"):
        SpaceTimeTransformer(3, 1, 8, 8, attention="axial")
    m = _model(window=3, channels=2, height=8, width=8, dim=16, heads=2)
    with pytest.raises(ValueError, match="\\[B, 3, 2, 8, 8\\]"):
        m(torch.zeros(1, 3, 1, 8, 8, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
