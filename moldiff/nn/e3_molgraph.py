"""An e3nn tensor-product network for molecular graphs: the call signature of
:class:`~moldiff.nn.molgraph.MolGraphNet` (positions with element, charge and bond tokens in; clean positions and
element, charge and bond logits out), built from the interaction layers of :mod:`moldiff.nn.e3`.

The bond tokens enter every message: the radial MLP that weights a tensor product reads the radial basis of the
distance *and* an embedding of the pair's current bond token.  Outputs: an ``l = 1`` displacement per atom (added
to the input positions, centre of mass removed), element and charge logits from the invariant channels, and bond
logits from ``[s_i + s_j, s_i * s_j, bond embedding, rbf(|x0_i - x0_j|)]`` -- symmetric in the pair and invariant.
E(3) with ``parity=True``; SE(3) only with ``parity=False`` (see :mod:`moldiff.nn.e3`).
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import Tensor, nn

from ..diffusion.spaces import graph_sizes, node_slots, remove_com
from .e3 import Interaction, irrep, radial_basis, spherical_irreps
from .embeddings import ConditionEmbedding, SinusoidalEmbedding
from .graphs import fully_connected_edges
from .molgraph import dense_pairs, pair_tokens_to_dense

__all__ = ["E3MolGraphNet"]


class E3MolGraphNet(nn.Module):
    """``forward(pos [N, 3], atoms [N], charges [N], bonds [P], t [G], batch [N], pair_index [2, P], num_graphs,
    max_nodes, cond=None) -> (pos0 [N, 3], atom_logits [N, A], charge_logits [N, C], bond_logits [P, K])`` -- as
    :class:`~moldiff.nn.molgraph.MolGraphNet`.  ``hidden``: channels per irrep order."""

    def __init__(self, num_atoms: int, num_charges: int, num_bonds: int, *, atom_states: int | None = None,
                 charge_states: int | None = None, bond_states: int | None = None, hidden: int = 64, edge: int = 16,
                 layers: int = 4, rbf: int = 16, cutoff: float = 6.0, lmax: int = 1, parity: bool = True,
                 radial_hidden: int = 64, cond_dim: int = 0):
        super().__init__()
        H = hidden
        self.rbf_num, self.r_max = rbf, float(cutoff)
        self.atom_emb = nn.Embedding(atom_states or num_atoms, H)
        self.charge_emb = nn.Embedding(charge_states or num_charges, H)
        self.bond_emb = nn.Embedding(bond_states or num_bonds, edge)
        self.time = nn.Sequential(SinusoidalEmbedding(16, scale=100.0), nn.Linear(16, H), nn.SiLU(), nn.Linear(H, H))
        self.cond = ConditionEmbedding(cond_dim, H) if cond_dim else None
        self.irreps_sh = spherical_irreps(lmax, parity)
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        irreps = o3.Irreps(f"{H}x0e")
        blocks = []
        for _ in range(layers):
            blocks.append(Interaction(irreps, self.irreps_sh, H, lmax, parity, rbf + edge, radial_hidden))
            irreps = blocks[-1].irreps_out
        self.blocks = nn.ModuleList(blocks)
        self.out = o3.Linear(irreps, o3.Irreps(f"1x{irrep(1, parity)}+{H}x0e"))
        self.atom_out = nn.Sequential(nn.Linear(H, H), nn.SiLU(), nn.Linear(H, num_atoms))
        self.charge_out = nn.Sequential(nn.Linear(H, H), nn.SiLU(), nn.Linear(H, num_charges))
        self.bond_out = nn.Sequential(nn.Linear(2 * H + edge + rbf, H), nn.SiLU(), nn.Linear(H, num_bonds))

    def _rbf(self, d: Tensor) -> Tensor:
        return radial_basis(d, self.r_max, self.rbf_num)

    def forward(self, pos: Tensor, atoms: Tensor, charges: Tensor, bonds: Tensor, t: Tensor, batch: Tensor,
                pair_index: Tensor, num_graphs: int, max_nodes: int,
                cond: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        G, M = num_graphs, max_nodes
        dtype = self.atom_emb.weight.dtype
        g_emb = self.time(t.reshape(-1).to(dtype))
        if self.cond is not None:
            g_emb = g_emb + self.cond(cond, G)
        elif cond is not None:
            raise ValueError("this network was built without a condition (cond_dim=0) but was given one")
        h = self.atom_emb(atoms) + self.charge_emb(charges) + g_emb[batch]
        where = dense_pairs(batch, pair_index, G)
        dense_bonds = pair_tokens_to_dense(bonds, where, G, M)  # [G, M, M]
        slot = node_slots(batch, graph_sizes(batch, G))
        src, dst = fully_connected_edges(batch, G)
        x = pos.to(dtype)
        vec = x[src] - x[dst]
        edge_feat = torch.cat([self._rbf(vec.norm(dim=-1)), self.bond_emb(dense_bonds[batch[dst], slot[dst], slot[src]])],
                              dim=-1)
        sh = self.sh(vec)
        for block in self.blocks:
            h = block(h, src, dst, sh, edge_feat)
        out = self.out(h)
        pos0 = (x + remove_com(out[:, :3], batch, G)).to(pos.dtype)
        pos0 = remove_com(pos0, batch, G)
        s = out[:, 3:]
        i, j = pair_index
        d = (pos0[i] - pos0[j]).to(dtype).norm(dim=-1)
        bond_feat = torch.cat([s[i] + s[j], s[i] * s[j], self.bond_emb(bonds), self._rbf(d)], dim=-1)
        return pos0, self.atom_out(s), self.charge_out(s), self.bond_out(bond_feat)
