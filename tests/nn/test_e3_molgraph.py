"""E3MolGraphNet (e3nn, MolGraphNet's signature): E(3) equivariance of positions and invariance of element, charge
and bond logits in float64 and float32 (lmax 1 and 2), symmetric bond logits, batch consistency, a condition."""

from __future__ import annotations

import pytest
import torch

from moldiff.molecules.flow_task import pair_layout
from moldiff.nn.e3_molgraph import E3MolGraphNet
from moldiff.testing import assert_batch_consistent, assert_equivariant

from .test_molgraph import SIZES, _fn, _inputs

pytestmark = pytest.mark.usefixtures("global_rng")


def _net(dtype, **kw):
    torch.manual_seed(0)
    return E3MolGraphNet(5, 3, 4, atom_states=6, charge_states=4, bond_states=5, hidden=8, edge=4, layers=2,
                         **kw).to(dtype).eval()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("lmax", [1, 2])
def test_equivariance(dtype, lmax):
    g = torch.Generator().manual_seed(1)
    x, batch = _inputs(dtype, g)
    fn = _fn(_net(dtype, lmax=lmax), batch, len(SIZES))
    y = fn(x)
    assert (y[:, :3] - x[:, :3]).abs().max() > 1e-3  # positions really move
    assert_equivariant(fn, x, batch, generator=g, translation="invariant")  # pos0 is zero-CoM, as MolGraphNet's


def test_bond_logits_are_symmetric_and_batched_equals_per_graph():
    g = torch.Generator().manual_seed(2)
    x, batch = _inputs(torch.float64, g)
    net = _net(torch.float64)
    tok = x[:, 3:].long()
    pi, _ = map(torch.from_numpy, pair_layout(torch.tensor(SIZES).numpy()))
    bonds = (tok[pi[0], 2] + tok[pi[1], 2]) % 5
    t = torch.full((3,), 0.5, dtype=torch.float64)
    _, _, _, b = net(x[:, :3], tok[:, 0], tok[:, 1], bonds, t, batch, pi, 3, 12)
    _, _, _, b_rev = net(x[:, :3], tok[:, 0], tok[:, 1], bonds, t, batch, pi.flip(0), 3, 12)
    torch.testing.assert_close(b, b_rev)

    def fn_batched(xx, bb, ng):
        sizes = torch.bincount(bb, minlength=ng).numpy()
        p, _ = map(torch.from_numpy, pair_layout(sizes))
        tk = xx[:, 3:].round().long()
        out = net(xx[:, :3], tk[:, 0], tk[:, 1], (tk[p[0], 2] + tk[p[1], 2]) % 5, torch.full((ng,), 0.4,
                  dtype=xx.dtype), bb, p, ng, int(sizes.max()))
        return torch.cat(out[:3], 1)

    assert_batch_consistent(fn_batched, list(torch.split(x, SIZES)))


def test_a_condition_keeps_equivariance():
    g = torch.Generator().manual_seed(3)
    x, batch = _inputs(torch.float64, g)
    net = _net(torch.float64, cond_dim=1)
    cond = torch.tensor([[0.5], [-1.0], [float("nan")]], dtype=torch.float64)
    assert_equivariant(_fn(net, batch, len(SIZES), cond=cond), x, batch, generator=g, translation="invariant")  # pos0 is zero-CoM, as MolGraphNet's
