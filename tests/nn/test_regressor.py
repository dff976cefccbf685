"""EGNNRegressor: invariance of the predicted property (rotations, reflections, translations, permutations) in
float64 and float32, and batched predictions equal per-molecule ones."""

from __future__ import annotations

import pytest
import torch

from moldiff.nn.regressor import EGNNRegressor
from moldiff.testing import assert_batch_consistent, assert_equivariant

pytestmark = pytest.mark.usefixtures("global_rng")

SIZES = [4, 9, 6]


def _net(dtype):
    torch.manual_seed(0)
    return EGNNRegressor(5, hidden=16, layers=3).to(dtype).eval()


def _fn(net, batch, num_graphs, max_nodes):
    """``x = [pos(3), element]`` -> ``[0, 0, 0, property of the atom's molecule]`` (a graph output per node)."""

    def fn(x):
        y = net(x[:, :3], x[:, 3].round().long(), batch, num_graphs, max_nodes)
        return torch.cat([torch.zeros_like(x[:, :3]), y[batch, None]], dim=1)

    return fn


def _inputs(dtype, g):
    n = sum(SIZES)
    batch = torch.repeat_interleave(torch.arange(len(SIZES)), torch.tensor(SIZES))
    pos = torch.randn(n, 3, generator=g, dtype=torch.float64) * 1.5
    z = torch.randint(5, (n, 1), generator=g).to(torch.float64)
    return torch.cat([pos, z], 1).to(dtype), batch


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_property_is_invariant(dtype):
    g = torch.Generator().manual_seed(1)
    x, batch = _inputs(dtype, g)
    fn = _fn(_net(dtype), batch, len(SIZES), max(SIZES))
    y = fn(x)[:, 3]
    assert y.unique().numel() == len(SIZES)  # molecules differ
    assert_equivariant(fn, x, batch, generator=g, translation="invariant")


def test_batched_equals_per_molecule():
    g = torch.Generator().manual_seed(2)
    x, _ = _inputs(torch.float64, g)
    net = _net(torch.float64)

    def fn_batched(xx, bb, ng):
        return _fn(net, bb, ng, int(torch.bincount(bb).max()))(xx)

    assert_batch_consistent(fn_batched, list(torch.split(x, SIZES)))
