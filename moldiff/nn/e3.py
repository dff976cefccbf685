"""A NequIP/MACE-style tensor-product denoiser for point clouds, built from e3nn.

Each node carries features of every order ``l <= lmax`` (``o3.Irreps``); a message from node ``j`` to node ``i`` is
the channel-wise (NequIP's ``uvu``) tensor product of ``h_j`` with the spherical harmonics of the edge vector
``x_j - x_i``, one weight per channel and path given by a radial MLP of the distance; messages are averaged over
each node's neighbours, mixed by a linear layer, added to a self-interaction and passed through a gated nonlinearity (scalars: SiLU; higher orders: multiplied by sigmoid-gated scalars).  Time (and
an optional global condition) enter as invariant node inputs.  The output is an ``l = 1`` vector per node -- the
position update, equivariant -- and ``F`` invariant features.

Parity: with ``parity=True`` (default) vectors are ``1o`` and the spherical harmonics carry their true parity, so
the network is E(3)-equivariant -- a mirror image is exactly as likely, as in QM9, whose chiral molecules are each
one arbitrary enantiomer of a racemic pair.  With ``parity=False`` every irrep is declared even: the network is then
only SE(3)-equivariant (it can tell a molecule from its mirror image), for data where chirality matters.  The tests
check both, including the deliberate absence of reflection equivariance.

Graphs: fully connected within each graph (molecules) or a radius graph (``cutoff``; larger systems), as PyG
``edge_index`` from :mod:`moldiff.nn.graphs`; aggregation by ``torch_geometric.utils.scatter``.
"""

from __future__ import annotations

import math

import torch
from e3nn import nn as enn
from e3nn import o3
from e3nn.math import soft_one_hot_linspace
from torch import Tensor, nn
from torch_geometric.utils import scatter

from ..diffusion.spaces import remove_com
from .embeddings import ConditionEmbedding, SinusoidalEmbedding
from .graphs import fully_connected_edges, radius_graph

__all__ = ["E3Denoiser", "irrep", "spherical_irreps", "radial_basis"]


def irrep(l: int, parity: bool) -> str:
    """``"1o"``, ``"2e"`` ... with the true parity ``(-1)^l``, or every order declared even without parity."""
    return f"{l}{'eo'[l % 2] if parity else 'e'}"


def spherical_irreps(lmax: int, parity: bool) -> o3.Irreps:
    """One copy of every order up to ``lmax``: the spherical harmonics of an edge vector."""
    return o3.Irreps("+".join(f"1x{irrep(l, parity)}" for l in range(lmax + 1)))


def radial_basis(d: Tensor, r_max: float, num: int) -> Tensor:
    """Gaussian radial basis of distances ``[E] -> [E, num]`` on ``[0, r_max]``, scaled to unit second moment."""
    return soft_one_hot_linspace(d, 0.0, r_max, num, basis="gaussian", cutoff=False) * math.sqrt(num)


def _hidden_irreps(mul: int, lmax: int, parity: bool) -> tuple[o3.Irreps, o3.Irreps, o3.Irreps]:
    """``(scalars, gated, gates)`` of a gated hidden layer: ``mul`` channels of every ``l <= lmax``."""
    scalars = o3.Irreps(f"{mul}x0e")
    gated = o3.Irreps("+".join(f"{mul}x{irrep(l, parity)}" for l in range(1, lmax + 1)))
    gates = o3.Irreps(f"{gated.num_irreps}x0e")
    return scalars, gated, gates


def _depthwise_tp(irreps_in: o3.Irreps, irreps_sh: o3.Irreps, keep) -> tuple[o3.TensorProduct, o3.Irreps]:
    """NequIP's convolution: every channel of every input irrep times every spherical harmonic, channel-wise
    (``uvu``: one weight per channel and path, given per edge by the radial MLP), kept where ``keep(ir)``."""
    mid, instructions = [], []
    for i, (mul, ir_in) in enumerate(irreps_in):
        for j, (_, ir_sh) in enumerate(irreps_sh):
            for ir_out in ir_in * ir_sh:
                if keep(ir_out):
                    instructions.append((i, j, len(mid), "uvu", True))
                    mid.append((mul, ir_out))
    mid = o3.Irreps(mid)
    mid_sorted, perm, _ = mid.sort()
    instructions = [(i, j, perm[k], mode, train) for i, j, k, mode, train in instructions]
    tp = o3.TensorProduct(irreps_in, irreps_sh, mid_sorted, instructions, shared_weights=False, internal_weights=False)
    return tp, mid_sorted


class Interaction(nn.Module):
    """One message-passing layer: ``h [N, irreps_in] -> [N, irreps_out]`` (see the module docstring)."""

    def __init__(self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, mul: int, lmax: int, parity: bool,
                 edge_dim: int, radial_hidden: int):
        super().__init__()
        scalars, gated, gates = _hidden_irreps(mul, lmax, parity)
        self.gate = enn.Gate(scalars, [nn.functional.silu], gates, [torch.sigmoid], gated)
        pre = self.gate.irreps_in
        allowed = {ir for _, ir in pre}
        self.tp, mid = _depthwise_tp(irreps_in, irreps_sh, lambda ir: ir in allowed)
        self.radial = nn.Sequential(nn.Linear(edge_dim, radial_hidden), nn.SiLU(),
                                    nn.Linear(radial_hidden, self.tp.weight_numel))
        self.linear = o3.Linear(mid, pre)
        self.self_interaction = o3.Linear(irreps_in, pre)
        self.irreps_out = self.gate.irreps_out
        self.residual = irreps_in == self.irreps_out

    def forward(self, h: Tensor, src: Tensor, dst: Tensor, sh: Tensor, edge_feat: Tensor) -> Tensor:
        """``edge_feat [E, edge_dim]``: invariant edge inputs of the radial MLP (radial basis, bond embedding)."""
        msg = self.tp(h[src], sh, self.radial(edge_feat))
        agg = scatter(msg, dst, dim=0, dim_size=h.shape[0], reduce="mean")
        out = self.gate(self.self_interaction(h) + self.linear(agg))
        return h + out if self.residual else out


class E3Denoiser(nn.Module):
    """``forward(x [N, 3 + F], t [G], batch [N], num_graphs, max_nodes=None, cond=None) -> [N, 3 + F]``.

    The call signature of :class:`~moldiff.nn.EGNNDenoiser` (the point-cloud backbone interface): the first three
    columns of ``x`` are positions (any length unit; zero-CoM per graph or not), the rest ``F`` invariant features;
    the output's first three columns are a displacement (equivariant, zero-CoM per graph, translation-invariant)
    and the rest ``F`` invariant features.  ``t [G]`` in ``[0, 1]``; ``cond [G, cond_dim]`` (NaN rows or ``None``:
    unconditional).  ``max_nodes`` is accepted for interface compatibility and unused.

    Args:
        num_features: ``F``.
        mul: channels per irrep order.  lmax: highest order of the hidden features and spherical harmonics (1 or 2).
        layers: interaction layers.  parity: E(3) (True) or SE(3) (False) equivariance.
        r_max: range of the radial basis (the unit of ``x``); distances beyond it saturate.
        cutoff: if set, messages only between nodes within this distance (a radius graph); else fully connected.
        num_basis, radial_hidden: the radial MLP.  time_dim: sinusoidal time features.  cond_dim: global condition.
        pos_dims: 3, or 2 for planar systems (DW4): the plane is embedded in 3D at z = 0 and the displacement's
            z-component dropped.  With ``parity`` it vanishes exactly (the mirror z -> -z fixes the input), and the
            result is O(2)-equivariant; without parity it is O(2)-equivariant too (an in-plane reflection is a
            3D rotation by pi composed with that mirror), so 2D systems cannot be made chiral this way.
    """

    def __init__(self, num_features: int = 0, *, mul: int = 32, lmax: int = 1, layers: int = 3, parity: bool = True,
                 r_max: float = 5.0, cutoff: float | None = None, num_basis: int = 16, radial_hidden: int = 64,
                 time_dim: int = 16, cond_dim: int = 0, pos_dims: int = 3):
        super().__init__()
        if pos_dims not in (2, 3):
            raise ValueError(f"E3Denoiser works on 2D or 3D positions, got pos_dims={pos_dims}")
        self.check_options(lmax, r_max, cutoff)
        cutoff = cutoff or None  # 0, as configs of earlier versions wrote it: fully connected
        self.num_features, self.pos_dims = num_features, pos_dims
        self.r_max, self.cutoff, self.num_basis = float(r_max), cutoff, num_basis
        self.time = SinusoidalEmbedding(time_dim, scale=100.0)
        self.cond = ConditionEmbedding(cond_dim, time_dim) if cond_dim else None
        self.embed = nn.Linear(num_features + time_dim, mul)
        vec = irrep(1, parity)
        self.irreps_sh = spherical_irreps(lmax, parity)
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        irreps = o3.Irreps(f"{mul}x0e")
        blocks = []
        for _ in range(layers):
            block = Interaction(irreps, self.irreps_sh, mul, lmax, parity, num_basis, radial_hidden)
            blocks.append(block)
            irreps = block.irreps_out
        self.blocks = nn.ModuleList(blocks)
        self.out = o3.Linear(irreps, o3.Irreps(f"1x{vec}" + (f"+{num_features}x0e" if num_features else "")))
        self.irreps_hidden = irreps

    @staticmethod
    def check_options(lmax: int = 1, r_max: float = 5.0, cutoff: float | None = None) -> None:
        """The value checks of this network's options (its constructor and config validation call them)."""
        if lmax < 1:
            raise ValueError(f"lmax must be >= 1, got {lmax}")
        if r_max <= 0 or (cutoff is not None and cutoff < 0):
            raise ValueError(f"need r_max > 0 and cutoff none or >= 0 (0: fully connected), got {r_max}, {cutoff}")

    def edges(self, pos: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        """The message graph: fully connected within each graph, or within ``cutoff``."""
        if self.cutoff is None:
            return fully_connected_edges(batch, num_graphs)
        return radius_graph(pos, self.cutoff, batch, num_graphs)

    def forward(self, x: Tensor, t: Tensor, batch: Tensor, num_graphs: int, max_nodes: int | None = None,
                cond: Tensor | None = None) -> Tensor:
        pos, feat = x[:, : self.pos_dims], x[:, self.pos_dims :]
        if self.pos_dims == 2:
            pos = torch.nn.functional.pad(pos, (0, 1))
        dtype = self.embed.weight.dtype
        g = self.time(t.reshape(-1).expand(num_graphs) if t.numel() == 1 else t).to(dtype)  # [G, time_dim]
        if self.cond is not None:
            g = g + self.cond(cond, num_graphs).to(dtype)
        elif cond is not None:
            raise ValueError("this network was built without a condition (cond_dim=0) but was given one")
        h = self.embed(torch.cat([feat.to(dtype), g[batch]], dim=-1))
        src, dst = self.edges(pos, batch, num_graphs)
        vec = (pos[src] - pos[dst]).to(dtype)
        dist = vec.norm(dim=-1)
        sh = self.sh(vec)
        rbf = radial_basis(dist, self.r_max, self.num_basis)
        for block in self.blocks:
            h = block(h, src, dst, sh, rbf)
        out = self.out(h)
        vel = remove_com(out[:, : self.pos_dims].to(x.dtype), batch, num_graphs)
        return torch.cat([vel, out[:, 3:].to(x.dtype)], dim=-1)
