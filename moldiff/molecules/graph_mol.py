"""A molecule with its graph: elements, formal charges, positions and kekulized bonds -- to and from RDKit and
SDF files (bonds and charges as generated, not re-derived from distances).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["GraphMolecule", "graph_molecules", "to_rdkit", "from_rdkit", "write_graph_sdf", "read_graph_sdf"]


@dataclass
class GraphMolecule:
    """``atomic_numbers [n]``, ``charges [n]`` (formal), ``positions [n, 3]`` (Å) and ``bonds [b, 3]`` rows
    ``(i, j, order)`` with ``i < j`` and order 1, 2 or 3 (kekulized)."""

    atomic_numbers: np.ndarray
    charges: np.ndarray
    positions: np.ndarray
    bonds: np.ndarray

    def __post_init__(self) -> None:
        self.atomic_numbers = np.asarray(self.atomic_numbers, dtype=np.int64).reshape(-1)
        n = len(self.atomic_numbers)
        self.charges = np.asarray(self.charges, dtype=np.int64).reshape(-1)
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(n, 3)
        self.bonds = np.asarray(self.bonds, dtype=np.int64).reshape(-1, 3)
        if len(self.charges) != n:
            raise ValueError(f"{len(self.charges)} charges for {n} atoms")
        if len(self.bonds) and ((self.bonds[:, :2] < 0).any() or (self.bonds[:, :2] >= n).any()):
            raise ValueError("bond atom index out of range")

    @property
    def num_atoms(self) -> int:
        return len(self.atomic_numbers)

    def adjacency(self) -> np.ndarray:
        """Symmetric bond-order matrix ``[n, n]``."""
        a = np.zeros((self.num_atoms, self.num_atoms), dtype=np.int64)
        if len(self.bonds):
            i, j, o = self.bonds.T
            a[i, j] = o
            a[j, i] = o
        return a

    def to_rdkit(self, *, sanitize: bool = False):
        """This molecule as an RDKit ``Mol`` (see :func:`to_rdkit`)."""
        return to_rdkit(self, sanitize=sanitize)

    def as_pair(self) -> tuple[np.ndarray, np.ndarray]:
        """``(atomic_numbers, positions)``: the input of EDM's distance-based evaluator."""
        return self.atomic_numbers, self.positions

    def to_pyg(self):
        """A ``torch_geometric.data.Data`` with ``z``, ``pos``, ``charges``, ``edge_index [2, 2b]`` (both
        directions) and ``edge_attr [2b]`` (bond orders) -- the layout of :meth:`moldiff.molecules.qm9.QM9.to_pyg`."""
        import torch
        from torch_geometric.data import Data

        b = torch.from_numpy(self.bonds)
        return Data(z=torch.from_numpy(self.atomic_numbers), pos=torch.from_numpy(self.positions),
                    charges=torch.from_numpy(self.charges), edge_index=torch.cat([b[:, :2].T, b[:, :2].T.flip(0)], 1),
                    edge_attr=torch.cat([b[:, 2], b[:, 2]]))

    @classmethod
    def from_pyg(cls, data) -> "GraphMolecule":
        """From a PyG ``Data`` with ``z`` and ``pos`` (and optionally ``charges``, ``edge_index`` and bond orders in
        ``edge_attr``; each undirected bond may appear once or in both directions)."""
        z = data.z.detach().cpu().numpy()
        charges = data.charges.detach().cpu().numpy() if getattr(data, "charges", None) is not None else np.zeros_like(z)
        bonds = np.zeros((0, 3), dtype=np.int64)
        if getattr(data, "edge_index", None) is not None and data.edge_index.numel():
            ei = data.edge_index.detach().cpu().numpy()
            attr = data.edge_attr if getattr(data, "edge_attr", None) is not None else None
            orders = np.ones(ei.shape[1], dtype=np.int64) if attr is None else attr.detach().cpu().numpy().reshape(-1)
            if len(orders) != ei.shape[1]:
                raise ValueError(f"edge_attr must hold one bond order per edge, got {len(orders)} for {ei.shape[1]}")
            found = {}
            for (i, j), o in zip(ei.T.tolist(), orders.tolist()):
                key = (min(i, j), max(i, j))
                if found.setdefault(key, int(o)) != int(o):
                    raise ValueError(f"bond {key} has two different orders")
            bonds = np.array([(i, j, o) for (i, j), o in sorted(found.items())], dtype=np.int64).reshape(-1, 3)
        return cls(z, charges, data.pos.detach().cpu().numpy(), bonds)


def graph_molecules(molecules) -> list[GraphMolecule]:
    """``GraphMolecule`` s from a list of them, a PyG ``Data`` or a PyG ``Batch`` (or a list of ``Data``)."""
    if isinstance(molecules, GraphMolecule):
        return [molecules]
    if hasattr(molecules, "to_data_list"):
        molecules = molecules.to_data_list()
    elif hasattr(molecules, "pos") and hasattr(molecules, "z"):
        molecules = [molecules]
    return [m if isinstance(m, GraphMolecule) else GraphMolecule.from_pyg(m) for m in molecules]


def to_rdkit(mol: GraphMolecule, *, sanitize: bool = False):
    """An RDKit ``Mol`` with these atoms (explicit, no implicit hydrogens), charges, bonds and one conformer.
    ``sanitize=True`` raises RDKit's exception for a chemically invalid graph."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    rw = Chem.RWMol()
    for z, q in zip(mol.atomic_numbers, mol.charges):
        atom = Chem.Atom(int(z))
        atom.SetFormalCharge(int(q))
        atom.SetNoImplicit(True)
        rw.AddAtom(atom)
    types = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
    for i, j, o in mol.bonds:
        if int(o) not in types:
            raise ValueError(f"bond order {o} is not 1, 2 or 3")
        rw.AddBond(int(i), int(j), types[int(o)])
    conf = Chem.Conformer(mol.num_atoms)
    for k, (x, y, z) in enumerate(mol.positions):
        conf.SetAtomPosition(k, Point3D(float(x), float(y), float(z)))
    out = rw.GetMol()
    out.AddConformer(conf, assignId=True)
    if sanitize:
        Chem.SanitizeMol(out)
    else:
        out.UpdatePropertyCache(strict=False)
    return out


def from_rdkit(rdmol) -> GraphMolecule:
    """A :class:`GraphMolecule` from an RDKit ``Mol`` with explicit hydrogens and a conformer; aromatic bonds
    are kekulized first (``ValueError`` if that fails)."""
    from rdkit import Chem

    mol = Chem.Mol(rdmol)
    if any(b.GetBondType() == Chem.BondType.AROMATIC for b in mol.GetBonds()):
        try:
            Chem.Kekulize(mol, clearAromaticFlags=True)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"aromatic bonds that RDKit cannot kekulize: {e}") from e
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    q = np.array([a.GetFormalCharge() for a in mol.GetAtoms()], dtype=np.int64)
    pos = mol.GetConformer().GetPositions() if mol.GetNumConformers() else np.zeros((len(z), 3))
    bonds = []
    for b in mol.GetBonds():
        o = b.GetBondTypeAsDouble()
        if o not in (1.0, 2.0, 3.0):
            raise ValueError(f"bond {b.GetIdx()} has unsupported type {b.GetBondType()}")
        i, j = sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))
        bonds.append((i, j, int(o)))
    return GraphMolecule(z, q, pos, np.asarray(sorted(bonds), dtype=np.int64).reshape(-1, 3))


def write_graph_sdf(path: str | os.PathLike[str], molecules: Iterable[GraphMolecule]) -> Path:
    """Write molecules with their own bonds and charges to an SDF file, atomically (nothing is left behind on
    an error).  Records are named by their 0-based index and written unsanitized, so invalid graphs are kept
    as generated."""
    from .evaluate import rdkit_log_silenced  # lazy: RDKit loads only when molecules are read or scored
    from .io import write_rdkit_sdf  # lazy: RDKit loads only when molecules are read or scored

    with rdkit_log_silenced():
        rdmols = [to_rdkit(m) for m in molecules]
    return write_rdkit_sdf(path, rdmols)


def read_graph_sdf(path: str | os.PathLike[str]) -> list[GraphMolecule]:
    """Molecules of an SDF file with their bonds and charges (unsanitized).  A record that RDKit cannot parse
    raises :class:`~moldiff.molecules.io.MoleculeFileError` naming it."""
    from rdkit import Chem

    from .evaluate import rdkit_log_silenced  # lazy: RDKit loads only when molecules are read or scored
    from .io import MoleculeFileError, read_molecules  # lazy: RDKit loads only when molecules are read or scored

    path = Path(path)
    if not read_molecules(path):  # the strict reader: missing file, truncation, NaN -> clear errors
        return []  # an empty file (RDKit's reader refuses one)
    out = []
    with rdkit_log_silenced():
        for i, mol in enumerate(Chem.SDMolSupplier(str(path), removeHs=False, sanitize=False)):
            if mol is None:
                raise MoleculeFileError(f"{path}: SDF record {i} (0-based) could not be parsed")
            try:
                out.append(from_rdkit(mol))
            except ValueError as e:
                raise MoleculeFileError(f"{path}: SDF record {i} (0-based): {e}") from e
    return out
