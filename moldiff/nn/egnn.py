"""EDM's E(n)-equivariant graph network (Hoogeboom et al. 2022) as a dense, padded PyTorch module.

Molecules are fully connected graphs.  A batch of ``B`` graphs of at most ``N`` nodes is held as padded
tensors ``x [B, N, D]`` (positions, same length unit as the data, e.g. Angstrom or EDM's normalised units),
``h [B, N, F]`` (invariant node features) and ``mask [B, N]`` (``True`` for real nodes).  Edge tensors are
``[B, N, N, C]``; pair ``(i, j)`` is the message from ``j`` to ``i`` and self pairs and pairs touching padding
are masked out.  There are no Python loops over graphs and no host syncs in ``forward``.

Speed: the first Linear of every edge MLP acts on ``[h_i, h_j, e_ij]``.  It is kept as *one*
``nn.Linear(2H + 2, H)`` (so the state dict has EDM's layout -- module and parameter names follow
``egnn/egnn_new.py``, so EDM checkpoints load directly), but it is evaluated by slicing its weight
``W = [W_a | W_b | W_e]`` into two node-level matmuls ``W_a h_i + b`` and ``W_b h_j`` of shape ``[B, N, H]``
that are broadcast-added onto the pair grid (see :func:`pair_linear`), never materialising the
``[B, N, N, 2H + 2]`` concatenation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..diffusion.spaces import graph_sizes, node_slots, remove_com_dense

__all__ = ["EGNN", "EGNNDenoiser", "to_dense", "from_dense", "pair_linear"]


def to_dense(values: Tensor, batch: Tensor, num_graphs: int, max_nodes: int) -> tuple[Tensor, Tensor]:
    """Concatenated node values ``[Ntot, D]`` -> padded ``(dense [G, max_nodes, D], mask [G, max_nodes] bool)``.

    ``batch [Ntot]`` (long, sorted ascending) names each node's graph.  Padding rows are exactly zero.
    No host sync: the node counts are a ``scatter_add`` (``bincount`` would sync on CUDA); graphs with more
    than ``max_nodes`` nodes are an (unchecked) out-of-bounds index.
    """
    counts = graph_sizes(batch, num_graphs)
    dense = values.new_zeros(num_graphs, max_nodes, values.shape[-1])
    dense[batch, node_slots(batch, counts)] = values
    mask = torch.arange(max_nodes, device=batch.device) < counts[:, None]
    return dense, mask


def from_dense(dense: Tensor, mask: Tensor, batch: Tensor | None = None) -> Tensor:
    """Inverse of :func:`to_dense`: ``dense [G, M, D]``, ``mask [G, M]`` -> ``[Ntot, D]`` (real nodes, in order).

    With ``batch`` the rows are gathered by index arithmetic (no host sync); without it ``dense[mask]``
    (a boolean gather, which syncs on CUDA).
    """
    if batch is None:
        return dense[mask]
    return dense[batch, node_slots(batch, mask.sum(1))]


def pair_linear(lin: nn.Linear, h: Tensor, e: Tensor) -> Tensor:
    """``lin(cat([h_i, h_j, e_ij]))`` for every pair, without building the concatenation.

    ``h [B, N, H]``, ``e [B, N, N, C]``, ``lin = Linear(2H + C, out)`` -> ``[B, N, N, out]``.
    """
    n, w = h.shape[-1], lin.weight
    out = F.linear(e, w[:, 2 * n :])  # [B, N, N, out]; the only pair-level matmul (K = C = 2)
    out.add_(F.linear(h, w[:, :n], lin.bias)[:, :, None])  # + W_a h_i + b  (in place: no extra pair temporaries)
    return out.add_(F.linear(h, w[:, n : 2 * n])[:, None, :])  # + W_b h_j


def _pair_geometry(x: Tensor, norm_constant: float) -> tuple[Tensor, Tensor]:
    """``x [B, N, D]`` -> squared distances ``r [B, N, N, 1]`` and ``(x_i - x_j) / (|x_i - x_j| + c)``."""
    diff = x[:, :, None, :] - x[:, None, :, :]
    r = diff.square().sum(-1, keepdim=True)
    return r, diff / (torch.sqrt(r + 1e-8) + norm_constant)


class GCL(nn.Module):
    """Invariant message-passing sublayer: attention-gated edge MLP, sum aggregation, residual node MLP."""

    def __init__(self, hidden_nf: int, edges_in_d: int = 2, attention: bool = True, normalization_factor: float = 1.0):
        super().__init__()
        H = hidden_nf
        self.edge_mlp = nn.Sequential(nn.Linear(2 * H + edges_in_d, H), nn.SiLU(), nn.Linear(H, H), nn.SiLU())
        self.node_mlp = nn.Sequential(nn.Linear(2 * H, H), nn.SiLU(), nn.Linear(H, H))
        self.attention = attention
        if attention:
            self.att_mlp = nn.Sequential(nn.Linear(H, 1), nn.Sigmoid())
        self.normalization_factor = normalization_factor

    def forward(self, h: Tensor, e: Tensor, node_mask: Tensor, edge_mask: Tensor) -> Tensor:
        """``h [B, N, H]``, ``e [B, N, N, 2]``, masks ``[B, N, 1]`` / ``[B, N, N, 1]`` (float) -> ``h [B, N, H]``."""
        m = self.edge_mlp[1:](pair_linear(self.edge_mlp[0], h, e))
        gate = edge_mask.to(m.dtype)  # [B, N, N, 1]: attention and the mask are folded into one gate
        if self.attention:
            gate = self.att_mlp(m) * gate
        agg = (m * gate).sum(2) / self.normalization_factor
        h = h + self.node_mlp(torch.cat([h, agg.to(h.dtype)], dim=-1))
        return h * node_mask.to(h.dtype)


class EquivariantUpdate(nn.Module):
    """Coordinate update ``x_i += sum_j (x_i - x_j) / (|x_i - x_j| + c) * phi(h_i, h_j, e_ij) / norm``."""

    def __init__(self, hidden_nf: int, edges_in_d: int = 2, tanh: bool = True, coords_range: float = 15.0,
                 normalization_factor: float = 1.0):
        super().__init__()
        H = hidden_nf
        last = nn.Linear(H, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=0.001)
        self.coord_mlp = nn.Sequential(nn.Linear(2 * H + edges_in_d, H), nn.SiLU(), nn.Linear(H, H), nn.SiLU(), last)
        self.tanh, self.coords_range, self.normalization_factor = tanh, float(coords_range), normalization_factor

    def forward(self, h: Tensor, x: Tensor, coord_diff: Tensor, e: Tensor, node_mask: Tensor,
                edge_mask: Tensor) -> Tensor:
        """``h [B, N, H]``, ``x [B, N, D]``, ``coord_diff [B, N, N, D]``, ``e [B, N, N, 2]`` -> ``x [B, N, D]``."""
        phi = self.coord_mlp[1:](pair_linear(self.coord_mlp[0], h, e))  # [B, N, N, 1]
        if self.tanh:
            phi = torch.tanh(phi) * self.coords_range
        trans = coord_diff * (phi.to(x.dtype) * edge_mask)
        return (x + trans.sum(2) / self.normalization_factor) * node_mask


class EquivariantBlock(nn.Module):
    """``inv_sublayers`` GCLs on edge attributes ``[r_ij, d0_ij]`` followed by one coordinate update."""

    def __init__(self, hidden_nf: int, inv_sublayers: int = 1, attention: bool = True, tanh: bool = True,
                 coords_range: float = 15.0, norm_constant: float = 1.0, normalization_factor: float = 1.0):
        super().__init__()
        self.n_layers, self.norm_constant = inv_sublayers, norm_constant
        for i in range(inv_sublayers):
            self.add_module(f"gcl_{i}", GCL(hidden_nf, 2, attention, normalization_factor))
        self.gcl_equiv = EquivariantUpdate(hidden_nf, 2, tanh, coords_range, normalization_factor)

    def forward(self, h: Tensor, x: Tensor, d0: Tensor, node_mask: Tensor, edge_mask: Tensor) -> tuple[Tensor, Tensor]:
        r, coord_diff = _pair_geometry(x, self.norm_constant)
        e = torch.cat([r, d0], dim=-1)  # [B, N, N, 2]
        for i in range(self.n_layers):
            h = getattr(self, f"gcl_{i}")(h, e, node_mask, edge_mask)
        x = self.gcl_equiv(h, x, coord_diff, e, node_mask, edge_mask)
        return h * node_mask.to(h.dtype), x


class EGNN(nn.Module):
    """EDM's EGNN: ``(x [B, N, D], h [B, N, in_node_nf], mask [B, N]) -> (x_out [B, N, D], h_out [B, N, out])``.

    ``x_out`` is E(n)-equivariant in ``x`` (rotations, reflections, translations), ``h_out`` invariant, both
    permutation-equivariant; padding rows of both outputs are exactly zero.  Defaults are EDM's QM9 settings.
    """

    def __init__(self, in_node_nf: int, out_node_nf: int, hidden_nf: int = 256, n_layers: int = 9,
                 inv_sublayers: int = 1, attention: bool = True, tanh: bool = True, coords_range: float = 15.0,
                 norm_constant: float = 1.0, normalization_factor: float = 1.0):
        super().__init__()
        self.n_layers = n_layers
        self.embedding = nn.Linear(in_node_nf, hidden_nf)
        for i in range(n_layers):
            block = EquivariantBlock(hidden_nf, inv_sublayers, attention, tanh, coords_range, norm_constant,
                                     normalization_factor)
            self.add_module(f"e_block_{i}", block)
        self.embedding_out = nn.Linear(hidden_nf, out_node_nf)

    def forward(self, x: Tensor, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        n = x.shape[1]
        eye = torch.eye(n, dtype=torch.bool, device=mask.device)
        node_mask = mask[..., None].to(x.dtype)  # [B, N, 1]
        edge_mask = (mask[:, :, None] & mask[:, None, :] & ~eye)[..., None].to(x.dtype)  # [B, N, N, 1]
        x = x * node_mask
        d0, _ = _pair_geometry(x, 1.0)  # initial squared distances, an edge attribute of every block
        h = self.embedding(h)
        for i in range(self.n_layers):
            h, x = getattr(self, f"e_block_{i}")(h, x, d0, node_mask, edge_mask)
        h = self.embedding_out(h)
        return x, h * node_mask.to(h.dtype)


class EGNNDenoiser(nn.Module):
    """EDM's ``EGNN_dynamics_QM9`` on the concatenated point-cloud layout of :class:`PointCloudSpace`.

    ``forward(x [Ntot, pos_dims + F], t [G] in [0, 1], batch [Ntot], num_graphs) -> [Ntot, pos_dims + F]``:
    the positions part is the EGNN displacement ``x_out - x_in`` with each graph's centre of mass (over its
    real nodes) removed -- rotation/reflection-equivariant and translation-invariant, in the units of ``x`` --
    and the features part is the EGNN's invariant feature output.  ``t`` is appended to every node's
    features (EGNN in/out width ``F + 1``; the time output channel is dropped).  The state dict has EDM's
    ``EGNN_dynamics_QM9`` layout (``egnn.e_block_0.gcl_0.edge_mlp.0.weight`` ...).
    """

    def __init__(self, num_features: int, hidden_nf: int = 256, n_layers: int = 9, attention: bool = True,
                 tanh: bool = True, coords_range: float = 15.0, norm_constant: float = 1.0, inv_sublayers: int = 1,
                 normalization_factor: float = 1.0, pos_dims: int = 3):
        super().__init__()
        self.check_options(coords_range, inv_sublayers)
        self.num_features, self.pos_dims = num_features, pos_dims
        self.egnn = EGNN(num_features + 1, num_features + 1, hidden_nf, n_layers, inv_sublayers, attention, tanh,
                         coords_range, norm_constant, normalization_factor)

    @staticmethod
    def check_options(coords_range: float = 15.0, inv_sublayers: int = 1) -> None:
        """The value checks of this network's options (its constructor and config validation call them)."""
        if coords_range <= 0 or inv_sublayers < 1:
            raise ValueError(f"need coords_range > 0 and inv_sublayers >= 1, got {coords_range}, {inv_sublayers}")

    def forward(self, x: Tensor, t: Tensor, batch: Tensor, num_graphs: int, max_nodes: int | None = None) -> Tensor:
        """``max_nodes`` (the padded graph size) is computed from ``batch`` when omitted (a host sync)."""
        if max_nodes is None:
            max_nodes = int(torch.bincount(batch, minlength=num_graphs).max())
        dense, mask = to_dense(x, batch, num_graphs, max_nodes)
        node_mask = mask[..., None].to(x.dtype)  # [G, M, 1]
        pos, feat = dense[..., : self.pos_dims], dense[..., self.pos_dims :]
        time = t.to(x.dtype).reshape(-1, 1, 1).expand(num_graphs, max_nodes, 1) * node_mask
        pos_out, h_out = self.egnn(pos, torch.cat([feat, time], dim=-1), mask)
        vel = remove_com_dense((pos_out - pos) * node_mask, mask)
        out = torch.cat([vel, h_out[..., : self.num_features].to(vel.dtype)], dim=-1)
        return from_dense(out, mask, batch)
