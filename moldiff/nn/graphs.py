"""Edge lists for point clouds in PyG's layout (``edge_index [2, E]``, row 0 the source, row 1 the target), in pure
torch: ``torch_geometric.nn.radius_graph`` needs ``pyg-lib``/``torch-cluster``, which this project cannot install.

Graphs are concatenated PyG-style: ``batch [N]`` names each node's graph and is sorted.  Both functions return
every ordered pair ``(j -> i)``, ``i != j``, of nodes in the same graph (within ``r`` for :func:`radius_graph`),
sorted by target then source, so results are deterministic and comparable with a brute-force reference.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..diffusion.spaces import graph_sizes

__all__ = ["fully_connected_edges", "radius_graph"]


def fully_connected_edges(batch: Tensor, num_graphs: int | None = None) -> Tensor:
    """Every ordered pair of distinct nodes within each graph: ``edge_index [2, sum_g n_g (n_g - 1)]``."""
    batch = batch.long()
    if batch.numel() == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=batch.device)
    G = int(batch.max()) + 1 if num_graphs is None else num_graphs
    counts = graph_sizes(batch, G)
    starts = torch.cumsum(counts, 0) - counts
    # the pairs of each graph size are built once and offset to every graph of that size
    out = []
    for n in torch.unique(counts).tolist():
        if n < 2:
            continue
        graphs = torch.nonzero(counts == n).squeeze(1)
        a = torch.arange(n, device=batch.device)
        i, j = torch.meshgrid(a, a, indexing="ij")  # target i, source j
        keep = i != j
        local = torch.stack([j[keep], i[keep]])  # [2, n (n - 1)]
        out.append((local[None] + starts[graphs][:, None, None]).permute(1, 0, 2).reshape(2, -1))
    if not out:
        return torch.zeros(2, 0, dtype=torch.long, device=batch.device)
    edges = torch.cat(out, dim=1)
    order = torch.argsort(edges[1] * batch.numel() + edges[0])
    return edges[:, order]


def radius_graph(pos: Tensor, r: float, batch: Tensor, num_graphs: int | None = None, *,
                 chunk: int = 4_000_000) -> Tensor:
    """Ordered pairs ``(j -> i)`` of distinct nodes of the same graph with ``|pos_i - pos_j| <= r``.

    Candidate pairs are the fully connected pairs of each graph, filtered by distance in chunks of ``chunk``
    pairs (memory ``O(chunk)``; the work is ``O(sum_g n_g^2)``, which is what systems of up to a few hundred
    particles per graph need -- no cell lists).
    """
    if r <= 0:
        raise ValueError(f"the radius must be positive, got {r}")
    edges = fully_connected_edges(batch, num_graphs)
    keep = torch.empty(edges.shape[1], dtype=torch.bool, device=pos.device)
    for s in range(0, edges.shape[1], chunk):
        e = edges[:, s : s + chunk]
        keep[s : s + chunk] = (pos[e[1]] - pos[e[0]]).square().sum(-1) <= r * r
    return edges[:, keep]
