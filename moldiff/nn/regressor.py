"""An E(3)-invariant property regressor for molecules: EDM's EGNN, sum pooling, an MLP head.

Used as the judge of property-conditioned generation (Hoogeboom et al. 2022, §5.2): it reads only positions and
elements, as EDM's regressor does, so a generated molecule is scored on its geometry and atom types.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .egnn import EGNN, to_dense

__all__ = ["EGNNRegressor"]


class EGNNRegressor(nn.Module):
    """``forward(pos [N, 3] Å, atoms [N] element classes, batch [N], num_graphs, max_nodes) -> [G]``.

    The output is invariant to rotations, reflections and translations of each molecule and to the order of its
    atoms (the EGNN's invariant features, summed over the molecule's atoms).
    """

    def __init__(self, num_elements: int, hidden: int = 128, layers: int = 6, coords_range: float = 15.0):
        super().__init__()
        self.num_elements = num_elements
        self.egnn = EGNN(num_elements, hidden, hidden, layers, coords_range=coords_range)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, pos: Tensor, atoms: Tensor, batch: Tensor, num_graphs: int, max_nodes: int) -> Tensor:
        dtype = self.head[0].weight.dtype
        h = F.one_hot(atoms, self.num_elements).to(dtype)
        x, mask = to_dense(pos.to(dtype), batch, num_graphs, max_nodes)
        hd, _ = to_dense(h, batch, num_graphs, max_nodes)
        _, h_out = self.egnn(x, hd, mask)
        return self.head(h_out.sum(1)).squeeze(-1)
