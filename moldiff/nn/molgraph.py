"""An E(3)-equivariant graph network with edge features for molecular graphs (positions, elements, formal
charges and bond types), dense and padded like :mod:`moldiff.nn.egnn`.

Each layer (EGNN-style, with an edge stream as in MiDi / EQGAT-diff / SemlaFlow):

* messages ``m_ij = MLP(h_i, h_j, e_ij, rbf(|x_i - x_j|))`` (the first Linear split by :func:`pair_linear`),
  gated by ``sigmoid(w . m_ij)``;
* nodes ``h_i <- LN(h_i + MLP(h_i, mean_j gate_ij m_ij))``;
* edges ``e_ij <- LN(e_ij + W m_ij)``;
* positions ``x_i <- x_i + mean_j (x_i - x_j) / (|x_i - x_j| + 1) tanh(phi(m_ij)) * coords_range``.

Only distances enter the invariant streams, and positions move along difference vectors, so ``x`` is
E(3)-equivariant (rotations, reflections, translations) and ``h``, ``e`` invariant.  Bond logits read the
symmetric sum ``e_ij + e_ji`` with ``h_i + h_j``, ``h_i * h_j`` and the radial basis of the *predicted*
distance, so they are symmetric in the pair by construction.

Reflections: the network is E(3)- (not only SE(3)-) equivariant, so a molecule and its mirror image are equally
likely -- as in the data, where each chiral QM9 molecule is one arbitrary enantiomer of a racemic pair.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..diffusion.spaces import graph_sizes, node_slots
from .egnn import from_dense, pair_linear, to_dense
from .embeddings import ConditionEmbedding

__all__ = ["MolGraphNet", "dense_pairs", "pair_tokens_to_dense"]


def dense_pairs(batch: Tensor, pair_index: Tensor, num_graphs: int) -> tuple[Tensor, Tensor, Tensor]:
    """Dense coordinates ``(g, a, b)`` ``[P]`` of the node pairs ``pair_index [2, P]`` (global node numbers)."""
    local = node_slots(batch, graph_sizes(batch, num_graphs))
    i, j = pair_index
    return batch[i], local[i], local[j]


def pair_tokens_to_dense(tokens: Tensor, where: tuple[Tensor, Tensor, Tensor], num_graphs: int, max_nodes: int,
                         fill: int = 0) -> Tensor:
    """Pair tokens ``[P]`` -> symmetric ``[G, M, M]`` (``fill`` elsewhere)."""
    g, a, b = where
    dense = tokens.new_full((num_graphs, max_nodes, max_nodes), fill)
    dense[g, a, b] = tokens
    dense[g, b, a] = tokens
    return dense


class RadialBasis(nn.Module):
    """Gaussian radial basis of a distance ``[...] -> [..., num]`` on ``[0, cutoff]`` (Å)."""

    def __init__(self, num: int = 16, cutoff: float = 6.0):
        super().__init__()
        self.register_buffer("centers", torch.linspace(0.0, cutoff, num), persistent=False)
        self.gamma = (num / cutoff) ** 2

    def forward(self, d: Tensor) -> Tensor:
        return torch.exp(-self.gamma * (d[..., None] - self.centers) ** 2)


class _Layer(nn.Module):
    def __init__(self, hidden: int, edge: int, rbf: int, coords_range: float):
        super().__init__()
        H = hidden
        self.msg_in = nn.Linear(2 * H + edge + rbf, H)
        self.msg = nn.Sequential(nn.SiLU(), nn.Linear(H, H), nn.SiLU())
        self.gate = nn.Linear(H, 1)
        self.node = nn.Sequential(nn.Linear(2 * H, H), nn.SiLU(), nn.Linear(H, H))
        self.node_norm = nn.LayerNorm(H)
        self.edge = nn.Linear(H, edge)
        self.edge_norm = nn.LayerNorm(edge)
        self.coord = nn.Sequential(nn.Linear(H, H), nn.SiLU(), nn.Linear(H, 1))
        nn.init.zeros_(self.coord[-1].weight)
        nn.init.zeros_(self.coord[-1].bias)
        self.coords_range = coords_range

    def forward(self, h, e, x, rbf_fn, node_mask, edge_mask, inv_deg):
        diff = x[:, :, None, :] - x[:, None, :, :]  # [B, N, N, 3]
        dist = torch.sqrt(diff.square().sum(-1) + 1e-8)  # [B, N, N]
        m = self.msg(pair_linear(self.msg_in, h, torch.cat([e, rbf_fn(dist)], dim=-1)))  # [B, N, N, H]
        gate = torch.sigmoid(self.gate(m)) * edge_mask
        agg = (m * gate).sum(2) * inv_deg
        h = self.node_norm(h + self.node(torch.cat([h, agg], dim=-1))) * node_mask
        e = self.edge_norm(e + self.edge(m))
        phi = torch.tanh(self.coord(m)) * self.coords_range * edge_mask  # [B, N, N, 1]
        x = x + (diff / (dist[..., None] + 1.0) * phi).sum(2) * inv_deg
        return h, e, x * node_mask


class MolGraphNet(nn.Module):
    """Predicts a clean molecule from a noisy one (see the module docstring).

    ``forward(pos [N, 3], atoms [N], charges [N], bonds [P], t [G], batch [N], pair_index [2, P], num_graphs,
    max_nodes, cond=None, prev=None) -> (pos0 [N, 3], atom_logits [N, A], charge_logits [N, C], bond_logits [P, K])``

    ``atoms``/``charges``/``bonds`` are tokens of the noisy state (``atom_states`` etc. values: the data classes
    plus a mask token where the categorical path has one); ``pair_index`` lists each unordered atom pair of
    a molecule once (global node numbers, ``i < j``); ``t [G]`` in ``[0, 1]`` is per molecule.  Positions are
    in Å and zero-CoM per molecule; ``pos0`` is too.  With ``cond_dim > 0`` a global condition ``cond [G,
    cond_dim]`` (e.g. a normalised property; NaN rows or ``None``: unconditional) is embedded and added to every
    atom's features beside the time; it is invariant, so equivariance is unchanged.

    Self-conditioning (``self_condition=True``; Chen et al. 2022, as in SemlaFlow, FlowMol3 and Megalodon):
    ``prev = (pos0 [N, 3], atom_probs [N, A], charge_probs [N, C], bond_probs [P, K])`` is the network's previous
    estimate of the clean molecule; its class probabilities are projected onto the atom and edge features and its
    positions enter through the radial basis of their pairwise distances (invariant, so equivariance holds).
    ``prev=None`` (the first step, or half the training batches) adds nothing.  The projections start at zero, so a
    network warm-started from one trained without self-conditioning computes the same function.
    """

    def __init__(self, num_atoms: int, num_charges: int, num_bonds: int, *, atom_states: int | None = None,
                 charge_states: int | None = None, bond_states: int | None = None, hidden: int = 128,
                 edge: int = 32, layers: int = 6, rbf: int = 16, cutoff: float = 6.0, coords_range: float = 2.0,
                 cond_dim: int = 0, self_condition: bool = False):
        super().__init__()
        H = hidden
        self.self_condition = self_condition
        if self_condition:  # zero-initialised: with them the network computes what it computed without
            self.sc_node = nn.Linear(num_atoms + num_charges, H)
            self.sc_edge = nn.Linear(num_bonds + rbf, edge)
            for lin in (self.sc_node, self.sc_edge):
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)
        self.atom_emb = nn.Embedding(atom_states or num_atoms, H)
        self.charge_emb = nn.Embedding(charge_states or num_charges, H)
        self.bond_emb = nn.Embedding(bond_states or num_bonds, edge)
        self.time = nn.Sequential(nn.Linear(16, H), nn.SiLU(), nn.Linear(H, H))
        self.cond = ConditionEmbedding(cond_dim, H) if cond_dim else None
        self.rbf = RadialBasis(rbf, cutoff)
        self.layers = nn.ModuleList(_Layer(H, edge, rbf, coords_range) for _ in range(layers))
        self.atom_out = nn.Sequential(nn.Linear(H, H), nn.SiLU(), nn.Linear(H, num_atoms))
        self.charge_out = nn.Sequential(nn.Linear(H, H), nn.SiLU(), nn.Linear(H, num_charges))
        self.bond_in = nn.Linear(2 * H + edge + rbf, H)
        self.bond_out = nn.Sequential(nn.SiLU(), nn.Linear(H, num_bonds))
        self.register_buffer("freqs", torch.exp(torch.linspace(0, math.log(100.0), 8)), persistent=False)

    def forward(self, pos: Tensor, atoms: Tensor, charges: Tensor, bonds: Tensor, t: Tensor, batch: Tensor,
                pair_index: Tensor, num_graphs: int, max_nodes: int, cond: Tensor | None = None,
                prev: tuple[Tensor, Tensor, Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        G, M = num_graphs, max_nodes
        dtype = self.atom_emb.weight.dtype
        if prev is not None and not self.self_condition:
            raise ValueError("this network was built without self-conditioning but was given a previous prediction")
        h0 = self.atom_emb(atoms) + self.charge_emb(charges)
        if prev is not None:  # self-conditioning on the previous clean-state estimate (positions enter as distances)
            h0 = h0 + self.sc_node(torch.cat([prev[1], prev[2]], -1).to(dtype))
        tf = t.to(dtype)[:, None] * self.freqs.to(dtype)  # [G, 8]
        g_emb = self.time(torch.cat([torch.sin(tf), torch.cos(tf)], -1))  # [G, H]
        if self.cond is not None:
            g_emb = g_emb + self.cond(cond, G)
        elif cond is not None:
            raise ValueError("this network was built without a condition (cond_dim=0) but was given one")
        h0 = h0 + g_emb[batch]
        h, mask = to_dense(h0, batch, G, M)
        x, _ = to_dense(pos.to(dtype), batch, G, M)
        where = dense_pairs(batch, pair_index, G)
        e = self.bond_emb(pair_tokens_to_dense(bonds, where, G, M))  # [G, M, M, E]
        if prev is not None:
            g, a, b = where
            x_prev, _ = to_dense(prev[0].to(dtype), batch, G, M)
            d_prev = torch.sqrt((x_prev[g, a] - x_prev[g, b]).square().sum(-1) + 1e-8)
            sc = self.sc_edge(torch.cat([prev[3].to(dtype), self.rbf(d_prev)], -1))  # [P, E]
            dense = sc.new_zeros(G, M, M, sc.shape[-1])
            dense[g, a, b] = sc
            dense[g, b, a] = sc
            e = e + dense
        node_mask = mask[..., None].to(dtype)
        eye = torch.eye(M, dtype=torch.bool, device=pos.device)
        edge_mask = (mask[:, :, None] & mask[:, None, :] & ~eye)[..., None].to(dtype)
        inv_deg = 1.0 / (node_mask.sum(1, keepdim=True) - 1).clamp(min=1)  # [G, 1, 1]
        for layer in self.layers:
            h, e, x = layer(h, e, x, self.rbf, node_mask, edge_mask, inv_deg)
        com = x.sum(1, keepdim=True) / node_mask.sum(1, keepdim=True).clamp(min=1)
        x = (x - com) * node_mask
        pos0 = from_dense(x, mask, batch)
        hn = from_dense(h, mask, batch)
        g, a, b = where
        d = torch.sqrt((x[g, a] - x[g, b]).square().sum(-1) + 1e-8)  # predicted distances [P]
        esym = e[g, a, b] + e[g, b, a]
        hi, hj = h[g, a], h[g, b]
        bond_feat = self.bond_in(torch.cat([hi + hj, hi * hj, esym, self.rbf(d)], dim=-1))
        return pos0, self.atom_out(hn), self.charge_out(hn), self.bond_out(bond_feat)
