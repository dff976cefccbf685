"""QM9 molecular graphs: kekulized bonds and formal charges for every molecule, checked against its SMILES.

Connectivity comes from the 3D geometry (RDKit's ``rdDetermineBonds.DetermineConnectivity``, covalent
radii); bond orders and formal charges come from the molecule's SMILES used as a template
(``AllChem.AssignBondOrdersFromTemplate``).  The result is sanitized and **kekulized**: bonds are single,
double or triple only.  Why kekulized: an aromatic ring has exactly one Kekulé assignment up to symmetry,
valences then add up in integers (a generated atom's stability is a plain sum), there is one class fewer
to learn, and RDKit re-perceives aromaticity when a generated molecule is sanitized.

A molecule is left out (and counted by reason) when its geometry and its SMILES disagree:

* ``geometry_extra_bond`` -- the geometry bonds two atoms the template does not (strained rings such as
  bicyclobutanes, whose 1,3 distance is within the covalent cut-off): sanitizing gives a valence error;
* ``geometry_missing_bond`` -- the template is not a subgraph of the geometry's graph;
* ``smiles_differs`` -- bond orders assigned, but the result's canonical SMILES is not the template's;
* ``connectivity_failed`` / ``template_unreadable`` / ``atom_count`` -- RDKit could not run a step.

The table (``qm9_graphs.npz``, beside the QM9 cache) is built once (about 2.5 CPU-minutes), checksummed and
keyed by the QM9 data checksum; a corrupt or stale table is reported and rebuilt.
"""

from __future__ import annotations

import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fileio import array_checksum, read_npz_cache, write_npz_cache
from ..progress import progress_bar

__all__ = ["BOND_ORDERS", "CHARGES", "STATUS", "MolGraph", "QM9Graphs", "extract_graph"]

#: bond classes: 0 = no bond, then single, double, triple (kekulized)
BOND_ORDERS: tuple[int, ...] = (0, 1, 2, 3)
#: formal-charge classes (QM9 holds N+, O-, N- and C- atoms in zwitterions)
CHARGES: tuple[int, ...] = (-1, 0, 1)
#: status codes of the table (0 = usable)
STATUS: tuple[str, ...] = ("ok", "connectivity_failed", "template_unreadable", "atom_count",
                           "geometry_missing_bond", "geometry_extra_bond", "smiles_differs")
GRAPH_CACHE_VERSION = 1
_KEYS = ("status", "charges", "bond_offsets", "bonds")


@dataclass(frozen=True)
class MolGraph:
    """One molecule's graph: ``charges [n]`` (int) and ``bonds [b, 3]`` rows ``(i, j, order)`` with ``i < j``."""

    charges: np.ndarray
    bonds: np.ndarray

    def adjacency(self, n: int) -> np.ndarray:
        """Dense symmetric bond-order matrix ``[n, n]`` (0 = no bond)."""
        a = np.zeros((n, n), dtype=np.int64)
        if len(self.bonds):
            i, j, o = self.bonds.T
            a[i, j] = o
            a[j, i] = o
        return a


def _rdkit_from_xyz(atomic_numbers: np.ndarray, positions: np.ndarray):
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    mol = Chem.RWMol()
    for z in atomic_numbers:
        mol.AddAtom(Chem.Atom(int(z)))
    conf = Chem.Conformer(len(atomic_numbers))
    for k, (x, y, z) in enumerate(np.asarray(positions, dtype=np.float64)):
        conf.SetAtomPosition(k, Point3D(float(x), float(y), float(z)))
    mol.AddConformer(conf, assignId=True)
    return mol


def extract_graph(atomic_numbers: np.ndarray, positions: np.ndarray, smiles: str) -> tuple[MolGraph | None, str]:
    """Bonds and charges of one molecule (see the module docstring): ``(graph, "ok")`` or ``(None, reason)``."""
    from rdkit import Chem
    from rdkit.Chem import AllChem, rdDetermineBonds

    from .evaluate import rdkit_log_silenced  # lazy: RDKit loads only when molecules are read or scored

    with rdkit_log_silenced():
        mol = _rdkit_from_xyz(atomic_numbers, positions)
        try:
            rdDetermineBonds.DetermineConnectivity(mol)
        except Exception:  # noqa: BLE001 -- RDKit raises several types
            return None, "connectivity_failed"
        template = Chem.MolFromSmiles(str(smiles))
        if template is None:
            return None, "template_unreadable"
        template = Chem.AddHs(template)
        if template.GetNumAtoms() != len(atomic_numbers):
            return None, "atom_count"
        try:
            new = AllChem.AssignBondOrdersFromTemplate(template, mol.GetMol())
        except Exception:  # noqa: BLE001
            return None, "geometry_missing_bond"
        if new.GetNumBonds() != template.GetNumBonds():
            return None, "geometry_extra_bond"
        try:
            Chem.SanitizeMol(new)
            Chem.Kekulize(new, clearAromaticFlags=True)
        except Exception:  # noqa: BLE001
            return None, "geometry_extra_bond"
        ours = Chem.MolToSmiles(Chem.RemoveHs(new), isomericSmiles=False)
        theirs = Chem.MolToSmiles(Chem.MolFromSmiles(str(smiles)), isomericSmiles=False)
        if Chem.CanonSmiles(ours) != Chem.CanonSmiles(theirs):
            return None, "smiles_differs"
    charges = np.array([a.GetFormalCharge() for a in new.GetAtoms()], dtype=np.int64)
    bonds = []
    for b in new.GetBonds():
        i, j = sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))
        order = int(round(b.GetBondTypeAsDouble()))
        if order not in (1, 2, 3):
            return None, "smiles_differs"
        bonds.append((i, j, order))
    return MolGraph(charges, np.asarray(sorted(bonds), dtype=np.int64).reshape(-1, 3)), "ok"


def _extract_rows(args) -> tuple[list[int], list[np.ndarray], list[np.ndarray]]:
    zs, ps, smiles = args
    status, charges, bonds = [], [], []
    for z, p, s in zip(zs, ps, smiles):
        g, reason = extract_graph(z, p, s)
        status.append(STATUS.index(reason))
        charges.append(g.charges if g is not None else np.zeros(len(z), dtype=np.int64))
        bonds.append(g.bonds if g is not None else np.zeros((0, 3), dtype=np.int64))
    return status, charges, bonds


class QM9Graphs:
    """Bonds and charges of QM9 molecules (rows of :class:`~moldiff.molecules.qm9.QM9`).

    ``QM9Graphs.load(qm9)`` reads or builds the full table; ``QM9Graphs.build(qm9, rows)`` extracts only the
    given rows in memory (small experiments and tests).  ``graph(i)`` gives one molecule's
    :class:`MolGraph`; ``usable(rows)`` keeps the rows whose template matched.
    """

    def __init__(self, rows: np.ndarray, status: np.ndarray, charges: np.ndarray, bond_offsets: np.ndarray,
                 bonds: np.ndarray, atom_offsets: np.ndarray, path: Path | None = None):
        self.rows = np.asarray(rows, dtype=np.int64)
        self.status, self.charges, self.bond_offsets, self.bonds = status, charges, bond_offsets, bonds
        self._atom_offsets = atom_offsets
        self._where = {int(r): k for k, r in enumerate(self.rows)} if len(self.rows) < 1_000_000 else None
        self.path = path
        self.checksum = array_checksum({"status": status, "charges": charges, "bond_offsets": bond_offsets,
                                        "bonds": bonds}, _KEYS)

    # -- construction ------------------------------------------------------------------------------------
    @classmethod
    def build(cls, qm9, rows=None, *, progress: bool = True, workers: int = 1) -> "QM9Graphs":
        rows = np.arange(len(qm9)) if rows is None else np.asarray(rows, dtype=np.int64)
        chunks = [rows[i : i + 2000] for i in range(0, len(rows), 2000)]
        jobs = [([qm9.atomic_numbers[qm9.offsets[r]:qm9.offsets[r + 1]] for r in c],
                 [qm9.positions[qm9.offsets[r]:qm9.offsets[r + 1]] for r in c],
                 [str(qm9.smiles[r]) for r in c]) for c in chunks]
        bar = progress_bar(total=len(rows), enabled=progress, desc="QM9 graphs: bonds and charges from templates (once)")
        status, charges, bonds = [], [], []
        if workers > 1 and len(chunks) > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(workers) as pool:
                results = pool.map(_extract_rows, jobs)
                for (s, c, b), job in zip(results, jobs):
                    status += s
                    charges += c
                    bonds += b
                    bar.update(len(job[0]))
        else:
            for job in jobs:
                s, c, b = _extract_rows(job)
                status += s
                charges += c
                bonds += b
                bar.update(len(job[0]))
        bar.close()
        counts = np.array([len(b) for b in bonds], dtype=np.int64)
        natoms = np.array([len(c) for c in charges], dtype=np.int64)
        return cls(rows, np.asarray(status, dtype=np.int8),
                   np.concatenate(charges).astype(np.int8) if charges else np.zeros(0, np.int8),
                   np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                   np.concatenate(bonds).astype(np.int8) if bonds else np.zeros((0, 3), np.int8),
                   np.concatenate([[0], np.cumsum(natoms)]).astype(np.int64))

    @classmethod
    def load(cls, qm9, *, progress: bool = True, workers: int = 2) -> "QM9Graphs":
        """The full table beside ``qm9``'s cache (built once; rebuilt when corrupt or stale)."""
        path = None if qm9.path is None else qm9.path.parent / "qm9_graphs.npz"
        if path is not None and path.exists():
            try:
                arrays, meta = read_npz_cache(path, _KEYS)
                if meta.get("version") != GRAPH_CACHE_VERSION or meta.get("qm9_checksum") != qm9.checksum:
                    raise ValueError("made for another QM9 cache or version")
                return cls(np.arange(len(qm9)), arrays["status"], arrays["charges"], arrays["bond_offsets"],
                           arrays["bonds"], qm9.offsets, path)
            except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as e:
                warnings.warn(f"QM9 graph table {path} is unusable ({e}); rebuilding it", stacklevel=2)
        table = cls.build(qm9, progress=progress, workers=workers)
        if path is not None:
            arrays = {"status": table.status, "charges": table.charges, "bond_offsets": table.bond_offsets,
                      "bonds": table.bonds}
            write_npz_cache(path, arrays, {"version": GRAPH_CACHE_VERSION, "qm9_checksum": qm9.checksum,
                                           "status_names": list(STATUS)}, keys=_KEYS)
            table.path = path
        return table

    # -- access --------------------------------------------------------------------------------------------
    def _k(self, row: int) -> int:
        if self._where is None:
            return int(row)
        try:
            return self._where[int(row)]
        except KeyError:
            raise KeyError(f"QM9 row {row} is not in this graph table") from None

    def reason(self, row: int) -> str:
        return STATUS[int(self.status[self._k(row)])]

    def graph(self, row: int) -> MolGraph:
        k = self._k(row)
        if self.status[k] != 0:
            raise ValueError(f"QM9 row {row} has no graph: {STATUS[int(self.status[k])]}")
        a, b = self._atom_offsets[k], self._atom_offsets[k + 1]
        c, d = self.bond_offsets[k], self.bond_offsets[k + 1]
        return MolGraph(self.charges[a:b].astype(np.int64), self.bonds[c:d].astype(np.int64))

    def usable(self, rows: np.ndarray) -> np.ndarray:
        """The rows (of ``rows``) whose graph was extracted."""
        rows = np.asarray(rows, dtype=np.int64)
        return rows[np.array([self.status[self._k(r)] == 0 for r in rows], dtype=bool)]

    def failure_counts(self, rows: np.ndarray | None = None) -> dict[str, int]:
        """``{reason: count}`` over ``rows`` (default: every row of the table), ``ok`` included."""
        st = self.status if rows is None else self.status[[self._k(r) for r in rows]]
        c = Counter(int(s) for s in st)
        return {STATUS[k]: int(v) for k, v in sorted(c.items())}
