"""Pictures of molecules: 3D ball-and-stick grids (matplotlib, Agg), with the evaluator's bonds."""

from __future__ import annotations

import math

import numpy as np
from .bonds import atom_stability, bond_orders
from .graph_metrics import valence_stability

__all__ = ["molecule_grid", "ELEMENT_COLORS"]

#: CPK-like colours; unknown elements are pink
ELEMENT_COLORS = {1: "#d9d9d9", 6: "#404040", 7: "#3050f8", 8: "#ff0d0d", 9: "#90e050"}
_SIZES = {1: 40, 6: 110, 7: 110, 8: 110, 9: 100}


def molecule_grid(molecules, *, title: str | None = None, ncols: int = 4, panel_size: float = 2.6):
    """A grid of 3D drawings; ``molecules`` is ``[(atomic_numbers [n], positions [n, 3] Å), ...]`` or
    :class:`~moldiff.molecules.graph_mol.GraphMolecule` s.

    Single, double and triple bonds are drawn with growing line widths: a ``GraphMolecule``'s own bonds (charged
    atoms ringed, stability from its bonds and charges), otherwise those of EDM's distance rule
    (:func:`~moldiff.molecules.bonds.bond_orders`); each panel's title is the size and stability.
    """
    import matplotlib.pyplot as plt


    n = max(len(molecules), 1)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig = plt.figure(figsize=(panel_size * ncols, panel_size * nrows + (0.4 if title else 0)))
    for k, mol in enumerate(molecules):
        graph = hasattr(mol, "bonds")
        z, pos = mol.as_pair() if graph else mol
        ax = fig.add_subplot(nrows, ncols, k + 1, projection="3d")
        z = np.asarray(z, dtype=np.int64)
        pos = np.asarray(pos, dtype=np.float64)
        finite = np.isfinite(pos).all()
        if finite and len(z):
            orders = mol.adjacency() if graph else bond_orders(z, pos)
            for i, j in zip(*np.nonzero(np.triu(orders))):
                ax.plot(*pos[[i, j]].T, color="#888888", lw=0.8 * orders[i, j], zorder=1)
            ax.scatter(*pos.T, c=[ELEMENT_COLORS.get(int(a), "#ff69b4") for a in z],
                       s=[_SIZES.get(int(a), 80) for a in z], edgecolors="k", linewidths=0.3, depthshade=False)
            if graph and (mol.charges != 0).any():
                charged = mol.charges != 0
                ax.scatter(*pos[charged].T, s=260, facecolors="none", edgecolors="#e0a000", linewidths=1.2,
                           depthshade=False)
            if graph:
                stable = bool(valence_stability(mol).all())
            else:
                stable = bool(atom_stability(z, pos)[0].all())
            lim = max(np.abs(pos - pos.mean(0)).max(), 1.0)
            c = pos.mean(0)
            ax.set_xlim(c[0] - lim, c[0] + lim)
            ax.set_ylim(c[1] - lim, c[1] + lim)
            ax.set_zlim(c[2] - lim, c[2] + lim)
            ax.set_title(f"{len(z)} atoms, {'stable' if stable else 'unstable'}", fontsize=8)
        else:
            ax.set_title("non-finite" if not finite else "empty", fontsize=8)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
