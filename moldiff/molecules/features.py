"""Molecule <-> diffusion state: EDM's joint encoding of positions, element one-hot and atomic number.

A batch of molecules is one tensor ``x [N, 3 + K + 1]`` over the ``N`` atoms of ``G`` molecules
(``graph [N]`` names each atom's molecule): zero-centre-of-mass positions / ``scale[0]`` (Å), the
one-hot element over :data:`ELEMENTS` / ``scale[1]`` and the atomic number / ``scale[2]``.  EDM's scaling
is ``(1, 4, 10)``.  It is a :class:`~moldiff.diffusion.spaces.PointCloudSpace` state with ``pos_dims=3``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..diffusion.spaces import remove_com

__all__ = ["ELEMENTS", "SYMBOLS", "MoleculeEncoding", "UnsupportedElementError"]

#: QM9's elements, in one-hot order
ELEMENTS: tuple[int, ...] = (1, 6, 7, 8, 9)
SYMBOLS: dict[int, str] = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F"}


class UnsupportedElementError(ValueError):
    pass


@dataclass(frozen=True)
class MoleculeEncoding:
    """How molecules become states and back.

    Args:
        elements: atomic numbers of the one-hot classes.
        scale: divisors of (positions, one-hot, atomic number); EDM's ``(1, 4, 10)``.
        include_charges: append the atomic-number channel (EDM's ``include_charges``).
    """

    elements: tuple[int, ...] = ELEMENTS
    scale: tuple[float, float, float] = (1.0, 4.0, 10.0)
    include_charges: bool = True

    @property
    def num_features(self) -> int:
        """Feature columns after the 3 position columns."""
        return len(self.elements) + int(self.include_charges)

    def element_index(self, atomic_numbers: np.ndarray) -> np.ndarray:
        """Class index of each atom; an element outside :attr:`elements` raises, naming it."""
        table = np.full(256, -1, dtype=np.int64)
        table[list(self.elements)] = np.arange(len(self.elements))
        z = np.asarray(atomic_numbers, dtype=np.int64)
        bad = (z < 0) | (z > 255)
        idx = np.where(bad, -1, table[np.clip(z, 0, 255)])
        if (idx < 0).any():
            unknown = sorted(set(z[idx < 0].tolist()))
            raise UnsupportedElementError(
                f"unsupported element(s) with atomic number {unknown}; this model knows {list(self.elements)}")
        return idx

    def encode(self, atomic_numbers: np.ndarray, positions: np.ndarray, graph: np.ndarray, num_graphs: int) -> Tensor:
        """Host-side encoding: ``Z [N], pos [N, 3] (Å), graph [N] -> x [N, 3 + F]`` float32, zero CoM."""
        pos = np.asarray(positions, dtype=np.float64)
        if not np.isfinite(pos).all():
            raise ValueError("non-finite atom positions in the data")
        idx = self.element_index(atomic_numbers)
        g = torch.from_numpy(np.asarray(graph, dtype=np.int64))
        p = remove_com(torch.from_numpy(pos), g, num_graphs) / self.scale[0]
        feats = [torch.nn.functional.one_hot(torch.from_numpy(idx), len(self.elements)).double() / self.scale[1]]
        if self.include_charges:
            feats.append(torch.from_numpy(np.asarray(atomic_numbers, dtype=np.float64))[:, None] / self.scale[2])
        return torch.cat([p, *feats], dim=1).float()

    def decode(self, x: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``x [N, 3 + F] -> (Z [N] int, pos [N, 3] float64 Å)``; the element is the one-hot argmax."""
        x = x.detach().double().cpu()
        k = len(self.elements)
        cls = x[:, 3 : 3 + k].argmax(dim=1).numpy()
        return np.asarray(self.elements)[cls], (x[:, :3] * self.scale[0]).numpy()

    def decode_batch(self, x: Tensor, graph: Tensor, num_graphs: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Split a decoded batch into ``[(Z, pos), ...]``, one per molecule."""
        z, pos = self.decode(x)
        counts = torch.bincount(graph.cpu(), minlength=num_graphs).tolist()
        out, start = [], 0
        for c in counts:
            out.append((z[start : start + c], pos[start : start + c]))
            start += c
        return out
