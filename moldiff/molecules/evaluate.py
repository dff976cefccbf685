"""EDM's molecule metrics: atom / molecule stability, RDKit validity, uniqueness and novelty.

Exactly the protocol of EDM's reference code (github.com/ehoogeboom/e3_diffusion_for_molecules,
``qm9/analyze.py`` and ``qm9/rdkit_functions.py``):

* **Stability** -- bonds from distances by EDM's rule (:mod:`moldiff.molecules.bonds`); an atom is stable
  iff its bond-order sum equals an allowed valence; ``atom_stability`` = stable atoms / all atoms,
  ``mol_stability`` = molecules whose atoms are all stable / molecules.
* **Validity** -- an RDKit molecule with those atoms (``Chem.Atom(Z)``, implicit hydrogens allowed, as
  EDM) and bonds (single / double / triple, added in EDM's order); ``Chem.SanitizeMol`` fails -> invalid;
  else the largest fragment (``GetMolFrags(asMols=True)``, first of the largest by atom count) is sanitized
  and written with ``Chem.MolToSmiles``.  ``validity`` = valid / molecules.
* **Uniqueness** = distinct valid SMILES / valid; ``valid_and_unique`` = distinct valid SMILES /
  molecules; **novelty** = distinct valid SMILES not in the reference set / distinct valid SMILES.

SMILES are those of EDM's pipeline, so explicit hydrogen atoms stay in them: water built from O, H, H
is ``[H]O[H]``, methane ``[H]C([H])([H])[H]`` (``Chem.MolToSmiles`` does not remove graph hydrogens).
Build the reference set with :func:`molecule_smiles` on the training molecules, so both sides go through
the same pipeline.

Where EDM has no answer this module is explicit (and counts the case in ``failures``): an empty molecule,
an unknown element (EDM raises ``KeyError``) or a non-finite position is invalid and unstable, never an
error.  With no valid molecule, uniqueness and novelty are 0 (EDM's convention).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rdkit import Chem, RDLogger, rdBase

from moldiff.molecules.bonds import (
    _KNOWN,
    _as_numpy,
    _orders,
    _stability,
    _table_index,
    bond_orders,
    element_symbol,
    pairwise_distances,
)

__all__ = [
    "MoleculeMetrics",
    "OVERLAP_DISTANCE",
    "build_rdkit_mol",
    "evaluate_molecules",
    "molecule_smiles",
    "rdkit_log_silenced",
]

#: Two atoms closer than this (Å) are counted as ``overlapping_atoms`` (still scored).
OVERLAP_DISTANCE = 0.1

_BOND_TYPES = (None, Chem.BondType.SINGLE, Chem.BondType.DOUBLE, Chem.BondType.TRIPLE)


@contextmanager
def rdkit_log_silenced() -> Iterator[None]:
    """Silence RDKit's logs (``rdApp.*``) inside the block; on exit re-enable the channels that were on."""
    enabled = [
        line.split(":", 1)[0] for line in rdBase.LogStatus().splitlines() if line.strip().endswith(":enabled")
    ]
    RDLogger.DisableLog("rdApp.*")
    try:
        yield
    finally:
        for name in enabled:
            RDLogger.EnableLog(name)


def build_rdkit_mol(
    atomic_numbers: Any, positions: Any, orders: np.ndarray | None = None, *, conformer: bool = True
) -> Chem.RWMol:
    """Unsanitized RDKit molecule with EDM's bonds.

    ``atomic_numbers [n]`` int, ``positions [n, 3]`` in Å, ``orders [n, n]`` bond orders (default:
    :func:`~moldiff.molecules.bonds.bond_orders`).  Atoms are ``Chem.Atom(Z)`` in the given order; bonds
    (i, j), i > j, are added row by row as EDM's ``build_molecule`` does.  With ``conformer`` the positions
    are attached as a 3D conformer (for writing SDF; SMILES ignore it).
    """
    z = _as_numpy(atomic_numbers).astype(np.int64).reshape(-1)
    if len(z) and (z.min() < 0 or z.max() > 118):
        raise ValueError(f"atomic numbers must lie in [0, 118], got {z.min()}..{z.max()}")
    if orders is None:
        orders = bond_orders(z, positions)
    orders = np.asarray(orders)
    mol = Chem.RWMol()
    for zi in z.tolist():
        mol.AddAtom(Chem.Atom(zi))
    rows, cols = np.nonzero(np.tril(orders, -1))
    for i, j in zip(rows.tolist(), cols.tolist()):
        mol.AddBond(i, j, _BOND_TYPES[int(orders[i, j])])
    if conformer:
        pos = np.asarray(_as_numpy(positions), dtype=np.float64).reshape(len(z), 3)
        conf = Chem.Conformer(len(z))
        if len(z):
            conf.SetPositions(pos)
        conf.Set3D(True)
        mol.AddConformer(conf, assignId=True)
    return mol


def _short_error(exc: Exception) -> str:
    name = type(exc).__name__
    if "Valence" in name:
        return "valence"
    if "Kekulize" in name:
        return "kekulize"
    return name.replace("Exception", "").lower() or "error"


def _smiles_or_reason(z: np.ndarray, orders: np.ndarray) -> tuple[str | None, str | None]:
    """EDM's ``mol2smiles`` + largest fragment on a molecule of known elements and finite positions."""
    mol = build_rdkit_mol(z, None, orders, conformer=False)
    try:
        Chem.SanitizeMol(mol)
    except ValueError as exc:  # RDKit's MolSanitizeException family derives from ValueError
        return None, "sanitize:" + _short_error(exc)
    if len(Chem.GetMolFrags(mol)) == 1:
        # A single fragment is a copy of ``mol`` itself: EDM's re-sanitize of it changes nothing.
        return Chem.MolToSmiles(mol), None
    frags = Chem.GetMolFrags(mol, asMols=True)
    largest = max(frags, key=lambda m: m.GetNumAtoms())
    try:
        Chem.SanitizeMol(largest)
    except ValueError as exc:  # pragma: no cover - a fragment of a sanitized molecule sanitizes
        return None, "sanitize_fragment:" + _short_error(exc)
    return Chem.MolToSmiles(largest), None


@dataclass
class _Scored:
    n_atoms: int
    n_stable_atoms: int
    stable: bool
    smiles: str | None
    reasons: list[str]


def _score(atomic_numbers: Any, positions: Any) -> _Scored:
    z = _table_index(atomic_numbers)  # validated; out-of-range Z -> 0 (unknown)
    z_raw = _as_numpy(atomic_numbers).astype(np.int64)
    pos = np.asarray(_as_numpy(positions), dtype=np.float64)
    n = len(z)
    if pos.shape != (n, 3):
        raise ValueError(f"positions must have shape [{n}, 3], got {pos.shape}")
    if n == 0:
        return _Scored(0, 0, False, None, ["empty"])
    reasons: list[str] = []
    if n == 1:
        reasons.append("single_atom")
    if not np.isfinite(pos).all():
        reasons.append("non_finite_positions")
        reasons.extend(f"unstable_atoms:{element_symbol(zi)}" for zi in z_raw.tolist())
        return _Scored(n, 0, False, None, reasons)
    dist = pairwise_distances(pos)
    if n > 1 and (dist + np.diag(np.full(n, np.inf))).min() < OVERLAP_DISTANCE:
        reasons.append("overlapping_atoms")
    orders = _orders(z, dist)
    stable_atoms, _ = _stability(z, orders)
    n_stable = int(stable_atoms.sum())
    if n_stable < n:
        reasons.extend(f"unstable_atoms:{element_symbol(zi)}" for zi in z_raw[~stable_atoms].tolist())
    if not _KNOWN[z].all():
        reasons.append("unknown_element")
        return _Scored(n, n_stable, n_stable == n, None, reasons)
    smiles, reason = _smiles_or_reason(z, orders)
    if reason is not None:
        reasons.append(reason)
    return _Scored(n, n_stable, n_stable == n, smiles, reasons)


def molecule_smiles(atomic_numbers: Any, positions: Any) -> str | None:
    """Canonical SMILES of the largest fragment by EDM's validity pipeline, or None when invalid (sanitize
    fails, empty molecule, unknown element, non-finite positions).  ``positions [n, 3]`` in Å."""
    with rdkit_log_silenced():
        return _score(atomic_numbers, positions).smiles


@dataclass
class MoleculeMetrics:
    """EDM's metrics over ``n`` molecules, as fractions in [0, 1].

    ``failures`` counts conditions by name: ``"empty"``, ``"single_atom"`` (scored normally),
    ``"non_finite_positions"`` (invalid, all atoms unstable), ``"unknown_element"`` (invalid, that atom
    unstable), ``"overlapping_atoms"`` (two atoms closer than :data:`OVERLAP_DISTANCE`; scored normally),
    ``"sanitize:<reason>"`` (invalid; reason ``valence``, ``kekulize``, ...) per molecule, and
    ``"unstable_atoms:<element>"`` per unstable atom.
    """

    n: int
    atom_stability: float
    mol_stability: float
    validity: float
    uniqueness: float
    valid_and_unique: float
    novelty: float | None
    failures: dict[str, int] = field(default_factory=dict)
    n_atoms: int = 0
    n_valid: int = 0
    n_unique: int = 0
    n_novel: int | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable ``{n, atom_stability, mol_stability, validity, uniqueness, valid_and_unique,
        novelty, failures}`` (fractions; ``failures`` as counts)."""
        return {
            "n": int(self.n),
            "atom_stability": float(self.atom_stability),
            "mol_stability": float(self.mol_stability),
            "validity": float(self.validity),
            "uniqueness": float(self.uniqueness),
            "valid_and_unique": float(self.valid_and_unique),
            "novelty": None if self.novelty is None else float(self.novelty),
            "failures": {str(k): int(v) for k, v in sorted(self.failures.items())},
        }

    def table(self) -> str:
        """Readable multi-line table of the metrics and failure counts."""
        rows = [
            ("molecules", f"{self.n}"),
            ("atom stability", f"{100 * self.atom_stability:.2f} %"),
            ("molecule stability", f"{100 * self.mol_stability:.2f} %"),
            ("validity", f"{100 * self.validity:.2f} %"),
            ("uniqueness (of valid)", f"{100 * self.uniqueness:.2f} %"),
            ("valid and unique", f"{100 * self.valid_and_unique:.2f} %"),
            ("novelty (of unique)", "-" if self.novelty is None else f"{100 * self.novelty:.2f} %"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v:>10}" for k, v in rows]
        if self.failures:
            lines.append("failures:")
            fw = max(len(k) for k in self.failures)
            lines += [f"  {k:<{fw}}  {v:>8d}" for k, v in sorted(self.failures.items())]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def evaluate_molecules(
    molecules: Iterable[tuple[Any, Any]],
    reference_smiles: set[str] | None = None,
    progress: bool = False,
) -> MoleculeMetrics:
    """EDM's metrics of ``molecules``: pairs ``(atomic_numbers [n] int, positions [n, 3] Å)`` (numpy arrays
    or tensors).  ``reference_smiles`` (e.g. the training set through :func:`molecule_smiles`) enables
    novelty.  ``progress`` shows a tqdm bar."""
    iterable: Iterable[tuple[Any, Any]] = molecules
    if progress:
        from tqdm.auto import tqdm

        iterable = tqdm(molecules, desc="evaluating molecules", unit="mol")
    start = time.perf_counter()
    n = n_atoms = n_stable_atoms = n_stable_mols = 0
    failures: Counter[str] = Counter()
    valid: list[str] = []
    with rdkit_log_silenced():
        for atomic_numbers, positions in iterable:
            s = _score(atomic_numbers, positions)
            n += 1
            n_atoms += s.n_atoms
            n_stable_atoms += s.n_stable_atoms
            n_stable_mols += int(s.stable)
            failures.update(s.reasons)
            if s.smiles is not None:
                valid.append(s.smiles)
    unique = set(valid)
    if reference_smiles is not None and not isinstance(reference_smiles, (set, frozenset)):
        reference_smiles = set(reference_smiles)
    novel = None if reference_smiles is None else sum(1 for smi in unique if smi not in reference_smiles)
    if novel is None:
        novelty = None
    else:
        novelty = novel / len(unique) if unique else 0.0
    return MoleculeMetrics(
        n=n,
        atom_stability=n_stable_atoms / n_atoms if n_atoms else 0.0,
        mol_stability=n_stable_mols / n if n else 0.0,
        validity=len(valid) / n if n else 0.0,
        uniqueness=len(unique) / len(valid) if valid else 0.0,
        valid_and_unique=len(unique) / n if n else 0.0,
        novelty=novelty,
        failures=dict(failures),
        n_atoms=n_atoms,
        n_valid=len(valid),
        n_unique=len(unique),
        n_novel=novel,
        seconds=time.perf_counter() - start,
    )
