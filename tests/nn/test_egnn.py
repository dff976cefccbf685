"""EDM EGNN backbone: symmetries, padding, the split edge layer, and the symmetry helpers themselves."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from moldiff.nn import EGNNDenoiser, from_dense, to_dense
from moldiff.nn.egnn import pair_linear
from moldiff.testing import (
    assert_batch_consistent,
    assert_equivariant,
    random_permutation_within_graphs,
    random_rotation,
)

NF = 6  # 5 one-hot + 1 charge
SIZES = (3, 7, 12)
CONFIGS = {
    "edm_qm9": {},
    "variant": dict(attention=False, tanh=False, inv_sublayers=2, normalization_factor=100.0, norm_constant=0.0),
}


def _model(dtype=torch.float64, **kw) -> EGNNDenoiser:
    """A small model whose coordinate heads are scaled up so the test sees a strongly non-linear update."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = EGNNDenoiser(NF, hidden_nf=32, n_layers=3, **kw)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "coord_mlp.4" in name:
                p.mul_(300.0)
    return model.to(dtype).eval()


def _data(gen: torch.Generator, sizes=SIZES, dtype=torch.float64):
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    x = 2.0 * torch.randn(batch.numel(), 3 + NF, generator=gen, dtype=dtype)
    t = torch.rand(len(sizes), generator=gen, dtype=dtype)
    return x, t, batch


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_denoiser_is_equivariant(config, dtype):
    gen = torch.Generator().manual_seed(1)
    model = _model(dtype, **CONFIGS[config])
    x, t, batch = _data(gen, dtype=dtype)
    out = model(x, t, batch, len(SIZES))
    assert out[:, :3].abs().max() > 1e-2 and out[:, 3:].abs().max() > 1e-2  # not trivially equivariant
    assert_equivariant(lambda v: model(v, t, batch, len(SIZES)), x, batch, generator=gen, translation="invariant")


def test_batched_equals_alone():
    gen = torch.Generator().manual_seed(2)
    model = _model()
    xs = [2.0 * torch.randn(n, 3 + NF, generator=gen, dtype=torch.float64) for n in SIZES]
    t = torch.tensor(0.37, dtype=torch.float64)
    assert_batch_consistent(lambda x, b, g: model(x, t.expand(g), b, g), xs)
    # different times per graph: each graph sees its own t
    x, tg, batch = _data(gen)
    out = model(x, tg, batch, len(SIZES))
    for g, (lo, hi) in enumerate(zip((0, 3, 10), (3, 10, 22))):
        alone = model(x[lo:hi], tg[g : g + 1], torch.zeros(hi - lo, dtype=torch.long), 1)
        torch.testing.assert_close(out[lo:hi], alone, atol=1e-12, rtol=1e-9)
    # explicit max_nodes larger than needed changes nothing
    torch.testing.assert_close(model(x, tg, batch, len(SIZES), max_nodes=15), out, atol=1e-12, rtol=1e-9)


def test_output_positions_have_zero_com():
    gen = torch.Generator().manual_seed(3)
    model = _model()
    x, t, batch = _data(gen)
    out = model(x, t, batch, len(SIZES))
    com = torch.zeros(len(SIZES), 3, dtype=out.dtype).index_add_(0, batch, out[:, :3])
    assert com.abs().max() < 1e-12 * out[:, :3].abs().max()


def test_padding_stays_zero_and_is_ignored():
    gen = torch.Generator().manual_seed(4)
    egnn = _model().egnn
    x, t, batch = _data(gen)
    dense, mask = to_dense(x, batch, len(SIZES), 12)
    pos, h = dense[..., :3], torch.cat([dense[..., 3:], t[:, None, None].expand(-1, 12, 1)], -1)
    x_out, h_out = egnn(pos, h, mask)
    assert x_out.shape == (3, 12, 3) and h_out.shape == (3, 12, NF + 1)
    assert (x_out[~mask] == 0).all() and (h_out[~mask] == 0).all()
    garbage = torch.randn(dense.shape[:2] + (1,), generator=gen, dtype=dense.dtype) * (~mask)[..., None]
    x2, h2 = egnn(pos + 5 * garbage, h + garbage, mask)
    torch.testing.assert_close((x2, h2), (x_out, h_out), atol=0, rtol=0)


def test_gradients_are_finite():
    gen = torch.Generator().manual_seed(5)
    model = _model(torch.float32)
    x, t, batch = _data(gen, dtype=torch.float32)
    x = x[:6].clone()
    x[4, :3] = x[3, :3]  # two coincident atoms: zero distance must not give NaN gradients
    batch = torch.tensor([0, 0, 0, 1, 1, 1])
    model(x.requires_grad_(), t[:2], batch, 2, max_nodes=5).square().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_cpu_autocast_bfloat16_runs():
    gen = torch.Generator().manual_seed(6)
    model = _model(torch.float32)
    x, t, batch = _data(gen, dtype=torch.float32)
    ref = model(x, t, batch, len(SIZES))
    with torch.autocast("cpu", torch.bfloat16):
        out = model(x, t, batch, len(SIZES))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()


def _edge_list_reference(egnn, x, h, batch):
    """EDM's own edge-list formulation (``egnn/egnn_new.py``) with the dense model's weights: messages on all
    ordered pairs ``i != j`` of a graph, scatter-summed onto ``i``.  Independent of the dense masking code."""
    same = batch[:, None] == batch[None, :]
    row, col = (same & ~torch.eye(len(batch), dtype=torch.bool)).nonzero().T

    def geometry(x, c):
        diff = x[row] - x[col]
        r = diff.square().sum(1, keepdim=True)
        return r, diff / (torch.sqrt(r + 1e-8) + c)

    d0, _ = geometry(x, 1.0)
    h = egnn.embedding(h)
    for i in range(egnn.n_layers):
        block = getattr(egnn, f"e_block_{i}")
        r, coord_diff = geometry(x, block.norm_constant)
        e = torch.cat([r, d0], 1)
        for k in range(block.n_layers):
            gcl = getattr(block, f"gcl_{k}")
            m = gcl.edge_mlp(torch.cat([h[row], h[col], e], 1))
            m = m * gcl.att_mlp(m) if gcl.attention else m
            agg = torch.zeros_like(h).index_add_(0, row, m) / gcl.normalization_factor
            h = h + gcl.node_mlp(torch.cat([h, agg], 1))
        upd = block.gcl_equiv
        phi = upd.coord_mlp(torch.cat([h[row], h[col], e], 1))
        phi = torch.tanh(phi) * upd.coords_range if upd.tanh else phi
        x = x + torch.zeros_like(x).index_add_(0, row, coord_diff * phi) / upd.normalization_factor
    return x, egnn.embedding_out(h)


@pytest.mark.parametrize("config", CONFIGS)
def test_dense_egnn_equals_edge_list_formulation(config):
    gen = torch.Generator().manual_seed(13)
    egnn = _model(**CONFIGS[config]).egnn
    x, t, batch = _data(gen)
    h = torch.cat([x[:, 3:], t[batch, None]], 1)
    x_ref, h_ref = _edge_list_reference(egnn, x[:, :3], h, batch)
    dense, mask = to_dense(torch.cat([x[:, :3], h], 1), batch, len(SIZES), 14)
    x_out, h_out = egnn(dense[..., :3], dense[..., 3:], mask)
    torch.testing.assert_close(from_dense(x_out, mask), x_ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(from_dense(h_out, mask), h_ref, atol=1e-10, rtol=1e-10)


def test_traces_as_one_graph():
    """``torch.compile(fullgraph=True)`` fails on graph breaks: data-dependent control flow, ``.item()``, host
    syncs.  The eager backend only traces (inductor codegen is too slow for a CPU unit test)."""
    gen = torch.Generator().manual_seed(14)
    model = _model(torch.float32)
    x, t, batch = _data(gen, dtype=torch.float32)
    torch._dynamo.reset()
    try:
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        out = compiled(x, t, batch, len(SIZES), max_nodes=12)
    finally:
        torch._dynamo.reset()
    torch.testing.assert_close(out, model(x, t, batch, len(SIZES), max_nodes=12))


def test_pair_linear_equals_concatenated_linear():
    gen = torch.Generator().manual_seed(7)
    B, N, H = 2, 5, 8
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        lin = nn.Linear(2 * H + 2, H).double()
    h = torch.randn(B, N, H, generator=gen, dtype=torch.float64)
    e = torch.randn(B, N, N, 2, generator=gen, dtype=torch.float64)
    cat = torch.cat([h[:, :, None].expand(B, N, N, H), h[:, None, :].expand(B, N, N, H), e], dim=-1)
    torch.testing.assert_close(pair_linear(lin, h, e), F.linear(cat, lin.weight, lin.bias), atol=1e-10, rtol=1e-10)  # two sums vs one


@pytest.mark.parametrize("sizes", [(3, 7, 12), (4, 0, 5, 1)])
def test_to_dense_from_dense_round_trip(sizes):
    gen = torch.Generator().manual_seed(8)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    values = torch.randn(batch.numel(), 4, generator=gen)
    for max_nodes in (max(sizes), max(sizes) + 3):
        dense, mask = to_dense(values, batch, len(sizes), max_nodes)
        assert dense.shape == (len(sizes), max_nodes, 4) and mask.dtype == torch.bool
        assert mask.sum(1).tolist() == list(sizes)
        assert (dense[~mask] == 0).all()
        torch.testing.assert_close(dense[mask], values, atol=0, rtol=0)
        torch.testing.assert_close(from_dense(dense, mask), values, atol=0, rtol=0)
        torch.testing.assert_close(from_dense(dense, mask, batch), values, atol=0, rtol=0)


def test_default_size_matches_edm():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = EGNNDenoiser(num_features=NF)  # EGNN in/out 7 = 5 one-hot + charge + time; 9 x 256
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 5_339_920  # ~5.3 M, as EDM's QM9 model
    keys = model.state_dict().keys()  # EDM's EGNN_dynamics_QM9 layout: its checkpoints load directly
    assert {"egnn.embedding.weight", "egnn.e_block_8.gcl_0.att_mlp.0.weight",
            "egnn.e_block_0.gcl_equiv.coord_mlp.4.weight", "egnn.embedding_out.bias"} <= keys


# ---- the helpers themselves ---------------------------------------------------------------------------


def test_random_rotation():
    gen = torch.Generator().manual_seed(9)
    for reflect, det in ((False, 1.0), (True, -1.0)):
        q = random_rotation(torch.float64, gen, reflect=reflect)
        torch.testing.assert_close(q @ q.T, torch.eye(3, dtype=torch.float64))
        assert abs(torch.linalg.det(q).item() - det) < 1e-12
    batch = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    perm = random_permutation_within_graphs(batch, gen)
    assert (batch[perm] == batch).all() and sorted(perm.tolist()) == list(range(9))


def _equivariant_fn(batch):
    """A hand-made equivariant, translation-invariant fn: positions minus graph centroid, |x - com|^2 feature."""

    def fn(x):
        pos, feat = x[:, :3], x[:, 3:]
        com = torch.zeros(3, 3, dtype=x.dtype).index_add_(0, batch, pos) / torch.bincount(batch)[:, None]
        rel = pos - com[batch]
        return torch.cat([rel, feat + rel.square().sum(1, keepdim=True)], 1)

    return fn


_NOISE = torch.Generator().manual_seed(0)


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda f: lambda x: f(x) + torch.tensor([1.0, 0, 0] + [0] * NF, dtype=x.dtype), "rotation"),
        (lambda f: lambda x: torch.cat([f(x)[:, :3], f(x)[:, 3:] + x[:, :1]], 1), "rotation failed on features"),
        (lambda f: lambda x: torch.cat([f(x)[:, :3], x[:, 3:]], 1) * torch.linspace(1, 2, len(x))[:, None],
         "permutation"),
        (lambda f: lambda x: torch.cat([x[:, :3], f(x)[:, 3:]], 1), r"translation \(invariant\)"),
        (lambda f: lambda x: f(x) + 1e-3 * torch.rand(x.shape, generator=_NOISE, dtype=x.dtype), "not deterministic"),
    ],
)
def test_assert_equivariant_catches_broken_fns(bad, match):
    gen = torch.Generator().manual_seed(10)
    x, _, batch = _data(gen)
    good = _equivariant_fn(batch)
    assert_equivariant(good, x, batch, generator=torch.Generator().manual_seed(0))
    with pytest.raises(AssertionError, match=match):
        assert_equivariant(bad(good), x, batch, generator=gen)


def test_assert_equivariant_translation_modes():
    gen = torch.Generator().manual_seed(11)
    x, _, batch = _data(gen)
    identity = lambda v: v  # noqa: E731 -- equivariant, not invariant, under translations
    assert_equivariant(identity, x, batch, generator=gen, translation="equivariant")
    assert_equivariant(identity, x, batch, generator=gen, translation=None)
    with pytest.raises(AssertionError, match="translation"):
        assert_equivariant(identity, x, batch, generator=gen, translation="invariant")
    with pytest.raises(AssertionError, match="translation"):
        assert_equivariant(_equivariant_fn(batch), x, batch, generator=gen, translation="equivariant")


def test_assert_batch_consistent_catches_cross_talk():
    gen = torch.Generator().manual_seed(12)
    xs = [torch.randn(n, 3 + NF, generator=gen, dtype=torch.float64) for n in SIZES]
    assert_batch_consistent(lambda x, b, g: 2 * x, xs)
    with pytest.raises(AssertionError, match="batch consistency of graph"):
        assert_batch_consistent(lambda x, b, g: x - x.mean(0), xs)  # mixes graphs
