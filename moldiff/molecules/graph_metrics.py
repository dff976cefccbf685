"""The generated-graph protocol (MiDi / SemlaFlow style): molecules scored on the bonds and formal charges the
model generated, next to EDM's distance-based protocol on the same samples.

Per molecule (never a crash; every failure counted by reason):

* **stability** -- an atom is stable iff the sum of its generated bond orders equals the allowed valence of its
  element *at its generated formal charge* (:data:`ALLOWED_VALENCE`: H 1; C 4, C+/C- 3; N 3, N+ 4, N- 2;
  O 2, O+ 3, O- 1; F 1); a molecule is stable iff all its atoms are.
* **validity** -- ``Chem.SanitizeMol`` of the whole generated graph (explicit hydrogens, no implicit ones)
  succeeds, the positions are finite and no two atoms overlap (closer than EDM's
  :data:`~moldiff.molecules.evaluate.OVERLAP_DISTANCE`, 0.1 Å: both atoms are unstable too, as under EDM's rule)
  (RDKit accepts under-valent atoms as radicals; stability does not); ``connected`` -- the graph is one fragment;
  ``valid_connected`` -- both.
* **uniqueness** / **novelty** -- canonical SMILES (hydrogens removed, no stereo) of the valid molecules:
  distinct / valid, and distinct ones absent from the training graphs' SMILES / distinct.
* **distribution distances to the test split** (:class:`ReferenceStats`): total variation of the atom-type,
  charge and bond-type frequencies; Wasserstein-1 of bond lengths (per bond order, weighted by the test
  frequency of the order) and of bond angles (per central element, weighted likewise), as MiDi reports.
* **geometry plausibility** -- a bond's length is plausible if it lies within the test split's range for its
  (element pair, order) widened by 0.05 Å (0.5-99.5 percentiles); an angle if it lies within the range for its
  central element widened by 5 degrees; a clash is two atoms at least three bonds apart (or in different
  fragments) closer than 0.7 x the sum of their van der Waals radii, or any two atoms, bonded ones included,
  closer than :data:`MIN_DISTANCE` (0.5 Å; the shortest bond, H-H, is 0.74 Å).  The test split's own rates are the floor.
* **MMFF strain** -- for the first ``mmff`` valid molecules that MMFF94 can type: the energy of the generated
  geometry minus that after local MMFF minimisation (kcal/mol; median reported).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..metrics import text_table
from .graph_mol import GraphMolecule, to_rdkit
from ..progress import progress_bar
from .graph_mol import graph_molecules

__all__ = ["ALLOWED_VALENCE", "GraphMetrics", "ReferenceStats", "evaluate_graphs", "graph_smiles",
           "reference_smiles", "valence_stability"]

#: allowed bond-order sum by (atomic number, formal charge)
ALLOWED_VALENCE: dict[tuple[int, int], int] = {
    (1, 0): 1, (6, 0): 4, (6, 1): 3, (6, -1): 3, (7, 0): 3, (7, 1): 4, (7, -1): 2,
    (8, 0): 2, (8, 1): 3, (8, -1): 1, (9, 0): 1,
}
_SYMBOL = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F"}
SMILES_VERSION = 1  #: bump when graph_smiles changes (invalidates cached reference SMILES)
CLASH_FACTOR = 0.7
MIN_DISTANCE = 0.5  #: Å: two atoms closer than this clash, bonded or not
LENGTH_MARGIN = 0.05  # Å
ANGLE_MARGIN = 5.0  # degrees


def _sym(z: int) -> str:
    return _SYMBOL.get(int(z), f"Z{int(z)}")


def overlapping_atoms(mol: GraphMolecule) -> np.ndarray:
    """``[n]`` bool: atoms closer than :data:`~moldiff.molecules.evaluate.OVERLAP_DISTANCE` to another atom."""
    from .evaluate import OVERLAP_DISTANCE  # lazy: RDKit loads only when molecules are read or scored

    if mol.num_atoms < 2 or not np.isfinite(mol.positions).all():
        return np.zeros(mol.num_atoms, dtype=bool)
    d = np.linalg.norm(mol.positions[:, None] - mol.positions[None], axis=-1) + np.diag(np.full(mol.num_atoms, np.inf))
    return (d < OVERLAP_DISTANCE).any(axis=1)


def valence_stability(mol: GraphMolecule) -> np.ndarray:
    """Per-atom stability ``[n]`` bool from the generated bonds and charges; an atom that overlaps another
    (:func:`overlapping_atoms`) is unstable whatever its bonds."""
    valence = mol.adjacency().sum(1)
    ok = np.array([ALLOWED_VALENCE.get((int(z), int(q))) == int(v)
                   for z, q, v in zip(mol.atomic_numbers, mol.charges, valence)], dtype=bool)
    return ok & ~overlapping_atoms(mol)


def graph_smiles(mol: GraphMolecule) -> tuple[str | None, str | None]:
    """``(canonical SMILES, None)`` of a valid graph (hydrogens removed, no stereo) or ``(None, reason)``."""
    from rdkit import Chem

    from .evaluate import short_error  # lazy: RDKit loads only when molecules are read or scored

    try:
        rd = to_rdkit(mol, sanitize=True)
    except ValueError as e:  # RDKit's sanitize exceptions derive from ValueError
        return None, "sanitize:" + short_error(e)
    try:
        return Chem.MolToSmiles(Chem.RemoveHs(rd), isomericSmiles=False), None
    except Exception as e:  # noqa: BLE001
        return None, "smiles:" + type(e).__name__


def reference_smiles(task, rows: np.ndarray) -> set[str]:
    """Canonical SMILES (:func:`graph_smiles`) of QM9 graphs ``rows`` of a :class:`QM9FlowTask`."""
    from .evaluate import rdkit_log_silenced  # lazy: RDKit loads only when molecules are read or scored

    out = set()
    with rdkit_log_silenced():
        for r in rows:
            s, _ = graph_smiles(task.molecule(int(r)))
            if s is not None:
                out.add(s)
    return out


def _bond_geometry(mol: GraphMolecule):
    """Bond lengths by key ``(sym_a-sym_b, order)`` and angles by central element (degrees)."""
    lengths, angles = defaultdict(list), defaultdict(list)
    pos, z = mol.positions, mol.atomic_numbers
    nbrs = defaultdict(list)
    for i, j, o in mol.bonds:
        a, b = sorted((_sym(z[i]), _sym(z[j])))
        lengths[(f"{a}-{b}", int(o))].append(float(np.linalg.norm(pos[i] - pos[j])))
        nbrs[int(i)].append(int(j))
        nbrs[int(j)].append(int(i))
    for c, nb in nbrs.items():
        for x in range(len(nb)):
            for y in range(x + 1, len(nb)):
                u, v = pos[nb[x]] - pos[c], pos[nb[y]] - pos[c]
                cos = np.dot(u, v) / max(np.linalg.norm(u) * np.linalg.norm(v), 1e-12)
                angles[_sym(z[c])].append(float(np.degrees(np.arccos(np.clip(cos, -1, 1)))))
    return lengths, angles


def _clashes(mol: GraphMolecule) -> int:
    """Pairs at least three bonds apart (or disconnected) closer than CLASH_FACTOR x the vdW radii sum, and any
    pair closer than MIN_DISTANCE."""
    from rdkit import Chem
    from scipy.sparse.csgraph import shortest_path

    n = mol.num_atoms
    if n < 2:
        return 0
    hops = shortest_path((mol.adjacency() > 0).astype(float), unweighted=True, directed=False)
    pt = Chem.GetPeriodicTable()
    rvdw = np.array([pt.GetRvdw(int(z)) for z in mol.atomic_numbers])
    d = np.linalg.norm(mol.positions[:, None] - mol.positions[None], axis=-1)
    close = ((d < CLASH_FACTOR * (rvdw[:, None] + rvdw[None])) & (hops >= 3)) | (d < MIN_DISTANCE)
    return int(np.triu(close, 1).sum())


class _Tally:
    """Element, charge and bond-order counts, bond lengths and angles of a set of molecules."""

    def __init__(self):
        self.atoms, self.charges, self.bonds = Counter(), Counter(), Counter()
        self.lengths, self.angles = defaultdict(list), defaultdict(list)

    def add(self, m: GraphMolecule) -> None:
        self.atoms.update(_sym(z) for z in m.atomic_numbers)
        self.charges.update(int(q) for q in m.charges)
        self.bonds.update(int(o) for o in m.bonds[:, 2])
        ln, an = _bond_geometry(m)
        for k, v in ln.items():
            self.lengths[k] += v
        for k, v in an.items():
            self.angles[k] += v


@dataclass
class ReferenceStats:
    """Frequencies and geometry distributions of reference molecules (the test split)."""

    atoms: dict[str, float]
    charges: dict[int, float]
    bonds: dict[int, float]
    lengths: dict[tuple[str, int], np.ndarray]
    angles: dict[str, np.ndarray]
    n: int
    geometry: dict[str, float] = field(default_factory=dict)  #: the reference's own plausibility rates

    @classmethod
    def from_molecules(cls, mols: list[GraphMolecule]) -> "ReferenceStats":
        tally = _Tally()
        for m in mols:
            tally.add(m)
        ref = cls(_normalise(tally.atoms), _normalise(tally.charges), _normalise(tally.bonds),
                  {k: np.asarray(v) for k, v in tally.lengths.items()},
                  {k: np.asarray(v) for k, v in tally.angles.items()}, len(mols))
        ref.geometry = _geometry_rates(mols, ref)
        return ref

    def length_range(self, key) -> tuple[float, float] | None:
        v = self.lengths.get(key)
        if v is None or not len(v):
            return None
        return float(np.percentile(v, 0.5)) - LENGTH_MARGIN, float(np.percentile(v, 99.5)) + LENGTH_MARGIN

    def angle_range(self, key) -> tuple[float, float] | None:
        v = self.angles.get(key)
        if v is None or not len(v):
            return None
        return float(np.percentile(v, 0.5)) - ANGLE_MARGIN, float(np.percentile(v, 99.5)) + ANGLE_MARGIN


def _normalise(c: Counter) -> dict:
    total = sum(c.values())
    return {k: v / total for k, v in c.items()} if total else {}


def _tv(p: dict, q: dict) -> float:
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def _weighted_w1(gen: dict, ref: dict, weights: dict) -> float:
    from scipy.stats import wasserstein_distance

    total, wsum = 0.0, 0.0
    for k, w in weights.items():
        if k in ref and len(ref[k]) and k in gen and len(gen[k]):
            total += w * wasserstein_distance(gen[k], ref[k])
            wsum += w
    return total / wsum if wsum else float("nan")


def _geometry_rates(mols: list[GraphMolecule], ref: ReferenceStats) -> dict[str, float]:
    n_bonds = ok_bonds = n_angles = ok_angles = clash_mols = mols_ok = 0
    ranges_l, ranges_a = {}, {}

    def within(values: dict, ranges: dict, reference_range) -> np.ndarray:
        """Per value: inside the reference range of its key (keys the reference lacks are outside)."""
        out = []
        for k, v in values.items():
            r = ranges.setdefault(k, reference_range(k))
            out.append(np.zeros(len(v), bool) if r is None else (np.asarray(v) >= r[0]) & (np.asarray(v) <= r[1]))
        return np.concatenate(out) if out else np.zeros(0, bool)

    for m in mols:
        ln, an = _bond_geometry(m)
        ok_l, ok_a = within(ln, ranges_l, ref.length_range), within(an, ranges_a, ref.angle_range)
        n_bonds, ok_bonds = n_bonds + len(ok_l), ok_bonds + int(ok_l.sum())
        n_angles, ok_angles = n_angles + len(ok_a), ok_angles + int(ok_a.sum())
        good = bool(ok_l.all() and ok_a.all())
        c = _clashes(m)
        clash_mols += int(c > 0)
        mols_ok += int(good and c == 0)
    n = max(len(mols), 1)
    return {"bond_lengths_ok": ok_bonds / max(n_bonds, 1), "bond_angles_ok": ok_angles / max(n_angles, 1),
            "clash_rate": clash_mols / n, "geometry_ok": mols_ok / n}


def _mmff_strain(mols: list[GraphMolecule], limit: int) -> tuple[list[float], Counter]:
    from rdkit.Chem import AllChem

    strains, reasons = [], Counter()
    for m in mols:
        if len(strains) >= limit:
            break
        try:
            rd = to_rdkit(m, sanitize=True)
        except ValueError:
            continue
        props = AllChem.MMFFGetMoleculeProperties(rd)
        if props is None:
            reasons["mmff:no_parameters"] += 1
            continue
        ff = AllChem.MMFFGetMoleculeForceField(rd, props)
        if ff is None:
            reasons["mmff:no_force_field"] += 1
            continue
        e0 = ff.CalcEnergy()
        ff.Minimize(maxIts=500)
        e1 = ff.CalcEnergy()
        if np.isfinite(e0) and np.isfinite(e1):
            strains.append(e0 - e1)
        else:
            reasons["mmff:non_finite"] += 1
    return strains, reasons


@dataclass
class GraphMetrics:
    """Both protocols on one set of molecules.  ``graph``, ``distribution`` and ``geometry`` hold fractions /
    distances; ``edm`` EDM's metrics (:class:`~moldiff.molecules.evaluate.MoleculeMetrics` as a dict) or None;
    ``failures`` counts per-molecule failure reasons."""

    n: int
    graph: dict[str, float]
    distribution: dict[str, float]
    geometry: dict[str, float]
    edm: dict[str, Any] | None
    failures: dict[str, int]
    reference_geometry: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def flat(self) -> dict[str, float]:
        """``{"graph/mol_stability": ..., "edm/validity": ..., ...}``: every finite number as a float (a distance
        with nothing to compare, e.g. the MMFF strain of zero valid molecules, is left out)."""
        out = {f"graph/{k}": v for k, v in self.graph.items()}
        out.update({f"dist/{k}": v for k, v in self.distribution.items()})
        out.update({f"geom/{k}": v for k, v in self.geometry.items()})
        if self.edm:
            out.update({f"edm/{k}": v for k, v in self.edm.items() if k != "failures"})
        return {k: float(v) for k, v in out.items()
                if isinstance(v, (int, float)) and v is not None and np.isfinite(v)}

    def table(self) -> str:
        rows = [("molecules", f"{self.n}")]
        rows += [(f"graph: {k}", _fmt(v)) for k, v in self.graph.items()]
        if self.edm:
            rows += [(f"EDM rule: {k}", _fmt(v)) for k, v in self.edm.items() if k not in ("n", "failures")]
        rows += [(f"distribution: {k}", f"{v:.4f}") for k, v in self.distribution.items()]
        rows += [(f"geometry: {k}", _fmt(v) if "rate" in k or "ok" in k else f"{v:.3f}")
                 for k, v in self.geometry.items()]
        rows += [(f"  test split: {k}", _fmt(v)) for k, v in self.reference_geometry.items()]
        return text_table(rows, self.failures)


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.2f} %" if isinstance(v, float) and 0 <= v <= 1 else str(v)


def evaluate_graphs(mols: list[GraphMolecule], *, reference: ReferenceStats | None = None,
                    training_smiles: set[str] | None = None, edm: bool = True, edm_reference: set[str] | None = None,
                    mmff: int = 0, progress: bool = False) -> GraphMetrics:
    """Score generated molecules with the generated-graph protocol (module docstring) and, with ``edm``,
    EDM's distance-based protocol on their coordinates.  ``mols``: ``GraphMolecule`` s or a PyG ``Batch``."""
    from .evaluate import evaluate_molecules, rdkit_log_silenced  # lazy: RDKit loads only when molecules are read or scored

    mols = graph_molecules(mols)
    start = time.perf_counter()
    n = len(mols)
    n_atoms = stable_atoms = stable_mols = n_valid = n_conn = n_valid_conn = 0
    failures: Counter = Counter()
    valid_smiles: list[str] = []
    tally = _Tally()
    scored = []
    with rdkit_log_silenced():
        for m in progress_bar(mols, enabled=progress, desc="scoring generated graphs", unit="mol"):
            try:
                stable = valence_stability(m)
                connected = m.num_atoms > 0 and _fragments(m) == 1
                if not m.num_atoms:
                    smi, reason = None, "empty"
                elif not np.isfinite(m.positions).all():
                    smi, reason = None, "non_finite_positions"
                elif overlapping_atoms(m).any():
                    smi, reason = None, "overlapping_atoms"
                else:
                    smi, reason = graph_smiles(m)
            except Exception as e:  # noqa: BLE001 -- a broken molecule is counted, never a crash
                failures[f"error:{type(e).__name__}"] += 1
                continue
            scored.append(m)
            n_atoms += m.num_atoms
            stable_atoms += int(stable.sum())
            stable_mols += int(m.num_atoms > 0 and stable.all())
            for z, q in zip(m.atomic_numbers[~stable], m.charges[~stable]):
                failures[f"unstable_atom:{_sym(z)}{'+' if q > 0 else '-' if q < 0 else ''}"] += 1
            if reason is not None:
                failures[reason] += 1
            else:
                n_valid += 1
                valid_smiles.append(smi)
            if not connected:
                failures["disconnected"] += 1
            n_conn += int(connected)
            n_valid_conn += int(connected and reason is None)
            tally.add(m)
    unique = set(valid_smiles)
    novelty = None
    if training_smiles is not None:
        novelty = sum(s not in training_smiles for s in unique) / len(unique) if unique else 0.0
    graph = {"atom_stability": stable_atoms / max(n_atoms, 1), "mol_stability": stable_mols / max(n, 1),
             "validity": n_valid / max(n, 1), "connected": n_conn / max(n, 1),
             "valid_connected": n_valid_conn / max(n, 1),
             "uniqueness": len(unique) / n_valid if n_valid else 0.0, "valid_unique": len(unique) / max(n, 1),
             "novelty": novelty}
    dist, geom, ref_geom = {}, {}, {}
    if reference is not None:
        dist = {"atom_tv": _tv(_normalise(tally.atoms), reference.atoms),
                "charge_tv": _tv(_normalise(tally.charges), reference.charges),
                "bond_tv": _tv(_normalise(tally.bonds), reference.bonds),
                "bond_length_w1": _weighted_w1(tally.lengths, reference.lengths,
                                               _normalise(Counter({k: len(v) for k, v in reference.lengths.items()}))),
                "bond_angle_w1": _weighted_w1(tally.angles, reference.angles,
                                              _normalise(Counter({k: len(v) for k, v in reference.angles.items()})))}
        with rdkit_log_silenced():
            geom = _geometry_rates(scored, reference)
        ref_geom = dict(reference.geometry)
    if mmff:
        with rdkit_log_silenced():
            strains, reasons = _mmff_strain(scored, mmff)
        failures.update(reasons)
        geom["mmff_strain_median"] = float(np.median(strains)) if strains else float("nan")
        geom["mmff_strain_mean"] = float(np.mean(strains)) if strains else float("nan")
        geom["mmff_molecules"] = float(len(strains))
    edm_res = None
    if edm:
        edm_res = evaluate_molecules([m.as_pair() for m in mols], reference_smiles=edm_reference).as_dict()
    return GraphMetrics(n, graph, dist, geom, edm_res, dict(failures), ref_geom, time.perf_counter() - start)


def _fragments(m: GraphMolecule) -> int:
    from scipy.sparse.csgraph import connected_components

    return int(connected_components(m.adjacency() > 0, directed=False)[0])
