"""State spaces: what a sampler needs to know about the shape of a state.

A *state* is always one tensor ``x``.  The *space* tells samplers, losses and likelihoods how that tensor
splits into independent samples, how to draw noise in it and how many degrees of freedom each sample has.

* :class:`EuclideanSpace` -- ``x`` has shape ``[B, *event]``; sample ``b`` is ``x[b]``.  2D toys, fields.
* :class:`PointCloudSpace` -- ``x`` has shape ``[N, D]`` for ``N`` nodes of ``G`` graphs concatenated
  (``batch[n]`` in ``[0, G)`` names the graph of node ``n``); the first ``pos_dims`` columns are positions
  that live in the zero-centre-of-mass subspace of each graph, the rest are free per-node features.
  Molecules and particle systems.

Samplers call ``space.randn_like`` / ``space.project`` / ``space.sum`` and never look at shapes
themselves, so one sampler serves every domain.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Space", "EuclideanSpace", "PointCloudSpace", "center_of_mass", "remove_com", "remove_com_dense", "graph_sizes",
           "node_slots"]


class Space:
    """Interface of a state space (see module docstring)."""

    def num_samples(self, x: Tensor) -> int:
        raise NotImplementedError

    def randn_like(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Standard normal noise in the space, same shape as ``x``."""
        raise NotImplementedError

    def project(self, x: Tensor) -> Tensor:
        """Orthogonal projection onto the space (identity for Euclidean states)."""
        raise NotImplementedError

    def sum(self, v: Tensor) -> Tensor:
        """Per-sample sum of an elementwise quantity: ``[*x.shape] -> [B]``."""
        raise NotImplementedError

    def dof(self, x: Tensor) -> Tensor:
        """Degrees of freedom of each sample, ``[B]`` float."""
        raise NotImplementedError

    def expand(self, v: Tensor, x: Tensor) -> Tensor:
        """Broadcast a per-sample value ``[B]`` against ``x`` (for ``alpha(t) * x`` and the like)."""
        raise NotImplementedError

    def mean(self, v: Tensor) -> Tensor:
        """Per-sample mean over the degrees of freedom of an elementwise quantity ``[*x.shape] -> [B]``."""
        return self.sum(v) / self.dof(v)


@dataclass(frozen=True)
class EuclideanSpace(Space):
    """States ``[B, *event]`` in R^d, d = prod(event)."""

    def num_samples(self, x: Tensor) -> int:
        return x.shape[0]

    def randn_like(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    def project(self, x: Tensor) -> Tensor:
        return x

    def sum(self, v: Tensor) -> Tensor:
        return v.reshape(v.shape[0], -1).sum(dim=1)

    def dof(self, x: Tensor) -> Tensor:
        d = x[0].numel()
        return torch.full((x.shape[0],), float(d), device=x.device, dtype=x.dtype)

    def expand(self, v: Tensor, x: Tensor) -> Tensor:
        return v.reshape(v.shape[0], *([1] * (x.dim() - 1)))


def graph_sizes(batch: Tensor, num_graphs: int) -> Tensor:
    """Nodes per graph ``[G]`` (a ``scatter_add``: unlike ``bincount`` it does not sync on CUDA)."""
    return torch.zeros(num_graphs, dtype=torch.long, device=batch.device).scatter_add_(0, batch, torch.ones_like(batch))


def node_slots(batch: Tensor, counts: Tensor) -> Tensor:
    """Index of each node within its graph ``[N]``: ``arange(N) - ptr[batch]`` with ``ptr`` the exclusive cumulative
    sum of the node counts ``[G]`` (``batch`` sorted ascending)."""
    ptr = torch.cumsum(counts, 0) - counts
    return torch.arange(batch.numel(), device=batch.device) - ptr[batch]


def center_of_mass(pos: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """Mean position of each graph: ``pos [N, P], batch [N] -> [G, P]``."""
    total = torch.zeros(num_graphs, pos.shape[1], device=pos.device, dtype=pos.dtype)
    total.index_add_(0, batch, pos)
    counts = graph_sizes(batch, num_graphs).clamp(min=1).to(pos.dtype)
    return total / counts[:, None]


def remove_com(pos: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """Shift every graph so that its centre of mass is at the origin."""
    return pos - center_of_mass(pos, batch, num_graphs)[batch]


def remove_com_dense(x, mask=None):
    """Zero centre of mass of dense clouds ``x [..., n, d]`` (a torch tensor or a numpy array; equal masses).
    With ``mask [..., n]`` (padded clouds) only the real nodes count and the padding stays zero."""
    if mask is None:
        return x - x.mean(-2, keepdims=True)
    m = mask[..., None].to(x.dtype)
    com = (x * m).sum(-2, keepdim=True) / m.sum(-2, keepdim=True).clamp(min=1)
    return (x - com) * m


class PointCloudSpace(Space):
    """Nodes of ``num_graphs`` point clouds concatenated: ``x [N, pos_dims + F]``.

    The position block lives in the zero-CoM subspace of each graph (``3 (n_g - 1)`` degrees of freedom
    for ``pos_dims = 3``); features are free (``F n_g``).

    Args:
        batch: ``[N]`` graph index of each node, values in ``[0, num_graphs)``.
        num_graphs: number of graphs G.
        pos_dims: number of leading position columns (3 for molecules, 2 for planar particles).
        zero_com: keep positions in the zero-CoM subspace (set False to diffuse absolute positions).
        validate: check that no graph is empty (a host synchronisation; training loops whose batches
            are non-empty by construction pass False, with ``num_graphs`` given).
    """

    def __init__(self, batch: Tensor, num_graphs: int | None = None, pos_dims: int = 3, zero_com: bool = True,
                 validate: bool = True):
        self.batch = batch.long()
        self.num_graphs = int(batch.max().item()) + 1 if num_graphs is None else int(num_graphs)
        self.pos_dims = pos_dims
        self.zero_com = zero_com
        self.counts = graph_sizes(self.batch, self.num_graphs)
        if validate and bool((self.counts == 0).any()):
            raise ValueError("PointCloudSpace: every graph needs at least one node")

    def num_samples(self, x: Tensor) -> int:
        return self.num_graphs

    def project(self, x: Tensor) -> Tensor:
        if not self.zero_com:
            return x
        pos = remove_com(x[:, : self.pos_dims], self.batch, self.num_graphs)
        return torch.cat([pos, x[:, self.pos_dims :]], dim=1)

    def randn_like(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return self.project(z)

    def graph_sum(self, v: Tensor) -> Tensor:
        """Per-graph sums of node rows: ``v [N, *D] -> [G, *D]``."""
        return torch.zeros(self.num_graphs, *v.shape[1:], device=v.device, dtype=v.dtype).index_add_(0, self.batch, v)

    def sum(self, v: Tensor) -> Tensor:
        out = torch.zeros(self.num_graphs, device=v.device, dtype=v.dtype)
        return out.index_add_(0, self.batch, v.reshape(v.shape[0], -1).sum(dim=1))

    def dof(self, x: Tensor) -> Tensor:
        n = self.counts.to(device=x.device, dtype=x.dtype)
        n_feat = x.shape[1] - self.pos_dims
        pos_dof = self.pos_dims * (n - 1) if self.zero_com else self.pos_dims * n
        return pos_dof + n_feat * n

    def expand(self, v: Tensor, x: Tensor) -> Tensor:
        return v[self.batch].reshape(-1, *([1] * (x.dim() - 1)))

    def com(self, x: Tensor) -> Tensor:
        """Centre of mass of the position block of each graph, ``[G, pos_dims]``."""
        return center_of_mass(x[:, : self.pos_dims], self.batch, self.num_graphs)
