"""Pure-torch edge lists against a brute-force reference."""

from __future__ import annotations

import pytest
import torch

from moldiff.nn.graphs import fully_connected_edges, radius_graph


def _brute(pos, batch, r=None):
    pairs = []
    for i in range(len(batch)):
        for j in range(len(batch)):
            if i != j and batch[i] == batch[j] and (r is None or float((pos[i] - pos[j]).norm()) <= r):
                pairs.append((j, i))
    pairs.sort(key=lambda p: (p[1], p[0]))
    return torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).T


def test_against_brute_force():
    g = torch.Generator().manual_seed(0)
    batch = torch.tensor([0, 0, 0, 1, 2, 2, 2, 2, 3, 3])
    pos = torch.randn(len(batch), 3, generator=g, dtype=torch.float64) * 2
    assert torch.equal(fully_connected_edges(batch), _brute(pos, batch))
    for r in (0.5, 1.5, 3.0, 100.0):
        assert torch.equal(radius_graph(pos, r, batch), _brute(pos, batch, r))
        assert torch.equal(radius_graph(pos, r, batch, chunk=3), _brute(pos, batch, r))  # chunked the same


def test_edge_cases():
    assert fully_connected_edges(torch.zeros(0, dtype=torch.long)).shape == (2, 0)
    assert fully_connected_edges(torch.tensor([0, 1, 2])).shape == (2, 0)  # single-node graphs
    with pytest.raises(ValueError, match="radius"):
        radius_graph(torch.zeros(2, 3), 0.0, torch.zeros(2, dtype=torch.long))
