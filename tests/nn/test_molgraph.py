"""MolGraphNet: E(3) equivariance of positions, invariance of element / charge / bond logits (float64 and
float32), symmetric bond logits, batch consistency."""

from __future__ import annotations

import pytest
import torch

from moldiff.molecules.flow_task import pair_layout
from moldiff.nn.molgraph import MolGraphNet
from moldiff.testing import assert_batch_consistent, assert_equivariant

pytestmark = pytest.mark.usefixtures("global_rng")

SIZES = [3, 7, 12]


def _net(dtype):
    torch.manual_seed(0)
    net = MolGraphNet(5, 3, 4, atom_states=6, charge_states=4, bond_states=5, hidden=16, edge=8, layers=3)
    # non-zero coordinate heads, so that the equivariance test sees real position updates
    for layer in net.layers:
        torch.nn.init.normal_(layer.coord[-1].weight, std=0.3)
    return net.to(dtype).eval()


def _fn(net, batch, num_graphs, cond=None):
    """``x = [pos(3), atom, charge, seed]`` -> ``[pos0(3), atom logits, charge logits, sum_j bond logits(i, j)]``.
    Bond tokens ``(seed_i + seed_j) mod 5`` follow any relabelling of the atoms; ``cond [G, C]`` is passed on."""
    sizes = torch.bincount(batch, minlength=num_graphs).numpy()
    pair_index, _ = map(torch.from_numpy, pair_layout(sizes))
    t = torch.linspace(0.2, 0.9, num_graphs, dtype=torch.float64)

    def fn(x):
        tok = x[:, 3:].round().long()
        bonds = (tok[pair_index[0], 2] + tok[pair_index[1], 2]) % 5
        pos0, a, c, b = net(x[:, :3], tok[:, 0], tok[:, 1], bonds, t.to(x.dtype), batch, pair_index, num_graphs,
                            int(sizes.max()), cond=cond)
        per_node = torch.zeros(len(x), b.shape[1], dtype=b.dtype).index_add_(0, pair_index[0], b)
        per_node.index_add_(0, pair_index[1], b)
        return torch.cat([pos0, a, c, per_node], dim=1)

    return fn


def _inputs(dtype, g):
    n = sum(SIZES)
    batch = torch.repeat_interleave(torch.arange(len(SIZES)), torch.tensor(SIZES))
    pos = torch.randn(n, 3, generator=g, dtype=torch.float64) * 1.5
    pos = pos - torch.zeros(len(SIZES), 3, dtype=torch.float64).index_add_(0, batch, pos)[batch] / torch.tensor(SIZES, dtype=torch.float64)[batch, None]
    toks = torch.stack([torch.randint(6, (n,), generator=g), torch.randint(4, (n,), generator=g),
                        torch.randint(5, (n,), generator=g)], 1).to(torch.float64)
    return torch.cat([pos, toks], 1).to(dtype), batch


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_equivariance(dtype):
    g = torch.Generator().manual_seed(1)
    x, batch = _inputs(dtype, g)
    net = _net(dtype)
    fn = _fn(net, batch, len(SIZES))
    y = fn(x)
    assert y[:, :3].abs().max() > 0.5  # positions really move
    assert_equivariant(fn, x, batch, generator=g, translation="invariant")


def test_bond_logits_are_symmetric_and_padding_free():
    g = torch.Generator().manual_seed(2)
    x, batch = _inputs(torch.float64, g)
    net = _net(torch.float64)
    sizes = torch.tensor(SIZES)
    tok = x[:, 3:].long()
    # both orientations of every pair: logits of (i, j) must equal those of (j, i)
    pi, _ = map(torch.from_numpy, pair_layout(sizes.numpy()))
    bonds = (tok[pi[0], 2] + tok[pi[1], 2]) % 5
    t = torch.full((3,), 0.5, dtype=torch.float64)
    _, _, _, b = net(x[:, :3], tok[:, 0], tok[:, 1], bonds, t, batch, pi, 3, 12)
    _, _, _, b_rev = net(x[:, :3], tok[:, 0], tok[:, 1], bonds, t, batch, pi.flip(0), 3, 12)
    torch.testing.assert_close(b, b_rev, rtol=1e-10, atol=1e-10)
    # more padding (a larger max_nodes) changes nothing
    out = net(x[:, :3], tok[:, 0], tok[:, 1], bonds, t, batch, pi, 3, 12)
    out_pad = net(x[:, :3], tok[:, 0], tok[:, 1], bonds, t, batch, pi, 3, 20)
    for a, c in zip(out, out_pad):
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-10)


def test_batch_consistency():
    g = torch.Generator().manual_seed(3)
    x, batch = _inputs(torch.float64, g)
    net = _net(torch.float64)
    xs = list(torch.split(x, SIZES))

    def fn_batched(xx, bb, ng):
        # a per-graph time that does not depend on the graph's position in the batch
        sizes = torch.bincount(bb, minlength=ng).numpy()
        pi, _ = map(torch.from_numpy, pair_layout(sizes))
        tok = xx[:, 3:].round().long()
        bonds = (tok[pi[0], 2] + tok[pi[1], 2]) % 5
        t = torch.full((ng,), 0.4, dtype=xx.dtype)
        pos0, a, c, _ = net(xx[:, :3], tok[:, 0], tok[:, 1], bonds, t, bb, pi, ng, int(sizes.max()))
        return torch.cat([pos0, a, c], 1)

    assert_batch_consistent(fn_batched, xs)


def test_a_condition_steers_the_output_and_keeps_equivariance():
    g = torch.Generator().manual_seed(4)
    x, batch = _inputs(torch.float64, g)
    torch.manual_seed(0)
    net = MolGraphNet(5, 3, 4, atom_states=6, charge_states=4, bond_states=5, hidden=16, edge=8, layers=2,
                      cond_dim=1).double().eval()
    for p in net.cond.parameters():  # the null embedding starts at zero: make the condition matter
        torch.nn.init.normal_(p, std=0.5)
    cond = torch.tensor([[0.5], [-1.0], [float("nan")]], dtype=torch.float64)

    def fn(c):
        return _fn(net, batch, len(SIZES), cond=c)

    assert_equivariant(fn(cond), x, batch, generator=g, translation="invariant")
    y, y2, y0 = fn(cond)(x), fn(cond * 2)(x), fn(None)(x)
    first, last = batch == 0, batch == 2
    assert (y[first] - y2[first]).abs().max() > 1e-3  # the condition changes the prediction
    torch.testing.assert_close(y[last], y0[last])  # a NaN row is the unconditional model


def test_an_unconditional_network_refuses_a_condition():
    net = MolGraphNet(5, 3, 4, hidden=8, edge=4, layers=1)
    pi, _ = map(torch.from_numpy, pair_layout([2]))
    with pytest.raises(ValueError, match="without a condition"):
        net(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long),
            torch.zeros(1, dtype=torch.long), torch.zeros(1), torch.zeros(2, dtype=torch.long), pi, 1, 2,
            cond=torch.zeros(1, 1))


def _sc_net(dtype, zero: bool):
    torch.manual_seed(0)
    net = MolGraphNet(5, 3, 4, atom_states=6, charge_states=4, bond_states=5, hidden=16, edge=8, layers=3,
                      self_condition=True)
    for layer in net.layers:
        torch.nn.init.normal_(layer.coord[-1].weight, std=0.3)
    if not zero:  # the projections start at zero: make the previous estimate matter
        for lin in (net.sc_node, net.sc_edge):
            torch.nn.init.normal_(lin.weight, std=0.5)
    return net.to(dtype).eval()


def _sc_fn(net, batch, num_graphs):
    """As :func:`_fn`, with a previous estimate that moves with ``x``: positions 1.1 x, class probabilities from the
    tokens (invariant)."""
    sizes = torch.bincount(batch, minlength=num_graphs).numpy()
    pair_index, _ = map(torch.from_numpy, pair_layout(sizes))
    t = torch.linspace(0.2, 0.9, num_graphs, dtype=torch.float64)

    def fn(x):
        tok = x[:, 3:].round().long()
        bonds = (tok[pair_index[0], 2] + tok[pair_index[1], 2]) % 5
        prev = (1.1 * x[:, :3], torch.softmax(torch.stack([tok[:, 0] % 5] * 5, 1).to(x.dtype) * 0.3, -1),
                torch.softmax(torch.stack([tok[:, 1] % 3] * 3, 1).to(x.dtype), -1),
                torch.nn.functional.one_hot(bonds % 4, 4).to(x.dtype))
        pos0, a, c, b = net(x[:, :3], tok[:, 0], tok[:, 1], bonds, t.to(x.dtype), batch, pair_index, num_graphs,
                            int(sizes.max()), prev=prev)
        per_node = torch.zeros(len(x), b.shape[1], dtype=b.dtype).index_add_(0, pair_index[0], b)
        per_node.index_add_(0, pair_index[1], b)
        return torch.cat([pos0, a, c, per_node], dim=1)

    return fn


def test_self_conditioning_keeps_equivariance_and_starts_as_the_plain_network():
    g = torch.Generator().manual_seed(5)
    x, batch = _inputs(torch.float64, g)
    net = _sc_net(torch.float64, zero=False)
    fn = _sc_fn(net, batch, len(SIZES))
    assert_equivariant(fn, x, batch, generator=g, translation="invariant")
    plain = _fn(net, batch, len(SIZES))  # prev=None
    assert (fn(x) - plain(x)).abs().max() > 1e-3  # the previous estimate changes the prediction
    # zero-initialised projections: the same function as a network without them, given prev or not
    zero = _sc_net(torch.float64, zero=True)
    base = _net(torch.float64)
    state = {k: v for k, v in zero.state_dict().items() if not k.startswith("sc_")}
    base.load_state_dict(state, strict=True)
    torch.testing.assert_close(_sc_fn(zero, batch, len(SIZES))(x), _fn(base, batch, len(SIZES))(x), rtol=0, atol=0)


def test_a_network_without_self_conditioning_refuses_a_previous_estimate():
    net = MolGraphNet(5, 3, 4, hidden=8, edge=4, layers=1)
    pi, _ = map(torch.from_numpy, pair_layout([2]))
    with pytest.raises(ValueError, match="without self-conditioning"):
        net(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long),
            torch.zeros(1, dtype=torch.long), torch.zeros(1), torch.zeros(2, dtype=torch.long), pi, 1, 2,
            prev=(torch.zeros(2, 3), torch.zeros(2, 5), torch.zeros(2, 3), torch.zeros(1, 4)))
