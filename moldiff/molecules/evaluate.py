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
* **Strict validity** (not EDM's; reported beside it) -- valid as above *and* one connected fragment.  EDM's
  largest-fragment rule calls a cloud of far-apart atoms valid (its largest fragment is one atom, which
  sanitizes with implicit hydrogens); ``validity_strict`` = valid and connected / molecules.
* **Uniqueness** = distinct valid SMILES / valid; ``valid_and_unique`` = distinct valid SMILES /
  molecules; **novelty** = distinct valid SMILES not in the reference set / distinct valid SMILES.

SMILES are those of EDM's pipeline, so explicit hydrogen atoms stay in them: water built from O, H, H
is ``[H]O[H]``, methane ``[H]C([H])([H])[H]`` (``Chem.MolToSmiles`` does not remove graph hydrogens).
Build the reference set with :func:`molecule_smiles` on the training molecules, so both sides go through
the same pipeline.

Where EDM has no answer this module is explicit (and counts the case in ``failures``), never an error:

* an empty molecule, an element outside EDM's tables (EDM raises ``KeyError``; atomic number 0 stands for a
  symbol that is no element) or a non-finite position -> invalid and unstable;
* two atoms closer than :data:`OVERLAP_DISTANCE` -> invalid, and both atoms unstable (EDM's rule would bond
  them, e.g. H-H at 0.002 Å counts as a stable, valid H2).  No QM9 molecule comes near: its closest pair of
  atoms is 0.96 Å apart, so EDM's figures on QM9 are unchanged;
* formal charges (read from SDF, :class:`Molecule`) -- EDM's rule is for neutral molecules.  Here an atom
  with charge ``q`` is stable iff its bond-order sum is an allowed valence of the isoelectronic element
  ``Z - q`` (RDKit's rule: N+ as C -> 4, O- as F -> 1, C- as N -> 3, C+ as B -> 3; a noble-gas shell, as
  Cl-, allows 0), and the RDKit molecule carries the charges, so sanitization sees them (an ammonium ion
  [NH4]+ is stable and valid; read without its charge it is neither).  Bonds still come from distances
  alone: a nitro group drawn with N=O and N-O lengths (1.21 / 1.36 Å) is stable, one with both N-O
  bonds at 1.22 Å (its real, resonant geometry) has two double bonds by EDM's rule and is not.  All
  charges zero (or none given) is exactly EDM.

With no valid molecule, uniqueness and novelty are 0 (EDM's convention).
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

from ..metrics import text_table
from moldiff.molecules.bonds import (
    KNOWN_ELEMENTS,
    VALENCE_TABLE,
    MAX_ATOMIC_NUMBER,
    as_numpy,
    orders_from_table,
    table_index,
    bond_orders,
    pairwise_distances,
)
from ..progress import progress_bar

__all__ = [
    "Molecule",
    "MoleculeMetrics",
    "OVERLAP_DISTANCE",
    "build_rdkit_mol",
    "evaluate_molecules",
    "molecule_smiles",
    "rdkit_log_silenced",
]

#: Two atoms closer than this (Å) are ``overlapping_atoms``: the molecule is invalid and both atoms unstable.
OVERLAP_DISTANCE = 0.1

_BOND_TYPES = (None, Chem.BondType.SINGLE, Chem.BondType.DOUBLE, Chem.BondType.TRIPLE)

#: EDM's allowed valences ``[119, k]`` by (isoelectronic) atomic number, plus valence 0 for the noble gases
#: (reached only by charged atoms: an element outside EDM's tables is never stable).
_ION_VALENCES = VALENCE_TABLE.copy()
_ION_VALENCES[[2, 10, 18, 36, 54, 86], 0] = 0


class Molecule(tuple):
    """A molecule as read from a file: unpacks as the pair ``(atomic_numbers [n] int64, positions [n, 3]
    float64 Å)`` and carries ``charges`` -- formal charges ``[n]`` int64 (SDF), or None where the format has
    none (XYZ).  :func:`evaluate_molecules` scores with the charges."""

    charges: np.ndarray | None

    def __new__(cls, atomic_numbers: np.ndarray, positions: np.ndarray, charges: np.ndarray | None = None):
        self = super().__new__(cls, (atomic_numbers, positions))
        self.charges = charges
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return Molecule, (self[0], self[1], self.charges)


def formal_charges(charges: Any, n: int) -> np.ndarray:
    """Formal charges as int64 ``[n]`` (zeros for None)."""
    if charges is None:
        return np.zeros(n, dtype=np.int64)
    q = as_numpy(charges)
    if q.shape != (n,) or (q.dtype.kind == "f" and not np.all(q == np.round(q))) or q.dtype.kind not in "iuf":
        raise ValueError(f"charges must be {n} integers, got {q.dtype} of shape {q.shape}")
    return q.astype(np.int64)


def _symbol(z: int, q: int = 0) -> str:
    """Element symbol (``"X"`` for 0, no element; ``"Z<z>"`` out of range) with the charge's sign."""
    z = int(z)
    sym = Chem.GetPeriodicTable().GetElementSymbol(z) if 0 < z <= MAX_ATOMIC_NUMBER else "X" if z == 0 else f"Z{z}"
    return sym + ("+" if q > 0 else "-" if q < 0 else "")


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
    atomic_numbers: Any,
    positions: Any,
    orders: np.ndarray | None = None,
    *,
    conformer: bool = True,
    charges: Any = None,
) -> Chem.RWMol:
    """Unsanitized RDKit molecule with EDM's bonds.

    ``atomic_numbers [n]`` int, ``positions [n, 3]`` in Å, ``orders [n, n]`` bond orders (default:
    :func:`~moldiff.molecules.bonds.bond_orders`), ``charges [n]`` formal charges (default none).  Atoms are
    ``Chem.Atom(Z)`` in the given order; bonds (i, j), i > j, are added row by row as EDM's
    ``build_molecule`` does.  With ``conformer`` the positions are attached as a 3D conformer (for writing
    SDF; SMILES ignore it).
    """
    z = as_numpy(atomic_numbers).astype(np.int64).reshape(-1)
    if len(z) and (z.min() < 0 or z.max() > 118):
        raise ValueError(f"atomic numbers must lie in [0, 118], got {z.min()}..{z.max()}")
    if orders is None:
        orders = bond_orders(z, positions)
    orders = np.asarray(orders)
    q = formal_charges(charges, len(z))
    mol = Chem.RWMol()
    for zi, qi in zip(z.tolist(), q.tolist()):
        atom = Chem.Atom(zi)
        atom.SetFormalCharge(qi)
        mol.AddAtom(atom)
    rows, cols = np.nonzero(np.tril(orders, -1))
    for i, j in zip(rows.tolist(), cols.tolist()):
        mol.AddBond(i, j, _BOND_TYPES[int(orders[i, j])])
    if conformer:
        pos = np.asarray(as_numpy(positions), dtype=np.float64).reshape(len(z), 3)
        conf = Chem.Conformer(len(z))
        if len(z):
            conf.SetPositions(pos)
        conf.Set3D(True)
        mol.AddConformer(conf, assignId=True)
    return mol


def short_error(exc: Exception) -> str:
    name = type(exc).__name__
    if "Valence" in name:
        return "valence"
    if "Kekulize" in name:
        return "kekulize"
    return name.replace("Exception", "").lower() or "error"


def _smiles_or_reason(z: np.ndarray, q: np.ndarray, orders: np.ndarray) -> tuple[str | None, int, str | None]:
    """EDM's ``mol2smiles`` + largest fragment on a molecule of known elements and finite positions:
    ``(smiles or None, number of fragments, failure reason or None)``."""
    mol = build_rdkit_mol(z, None, orders, conformer=False, charges=q)
    try:
        Chem.SanitizeMol(mol)
    except ValueError as exc:  # RDKit's MolSanitizeException family derives from ValueError
        return None, 0, "sanitize:" + short_error(exc)
    n_frags = len(Chem.GetMolFrags(mol))
    if n_frags == 1:
        # A single fragment is a copy of ``mol`` itself: EDM's re-sanitize of it changes nothing.
        return Chem.MolToSmiles(mol), 1, None
    frags = Chem.GetMolFrags(mol, asMols=True)
    largest = max(frags, key=lambda m: m.GetNumAtoms())
    try:
        Chem.SanitizeMol(largest)
    except ValueError as exc:  # pragma: no cover - a fragment of a sanitized molecule sanitizes
        return None, n_frags, "sanitize_fragment:" + short_error(exc)
    return Chem.MolToSmiles(largest), n_frags, None


@dataclass
class _Scored:
    n_atoms: int
    n_stable_atoms: int
    stable: bool
    smiles: str | None  # EDM-valid iff not None
    connected: bool  # one fragment (strictly valid iff also EDM-valid)
    reasons: list[str]


def score_molecule(atomic_numbers: Any, positions: Any, charges: Any = None) -> _Scored:
    z = table_index(atomic_numbers)  # validated; out-of-range Z -> 0 (unknown)
    z_raw = as_numpy(atomic_numbers).astype(np.int64)
    pos = np.asarray(as_numpy(positions), dtype=np.float64)
    n = len(z)
    if pos.shape != (n, 3):
        raise ValueError(f"positions must have shape [{n}, 3], got {pos.shape}")
    q = formal_charges(charges, n)
    if n == 0:
        return _Scored(0, 0, False, None, False, ["empty"])
    reasons: list[str] = []
    if n == 1:
        reasons.append("single_atom")
    if not np.isfinite(pos).all():
        reasons.append("non_finite_positions")
        reasons.extend(f"unstable_atoms:{_symbol(zi, qi)}" for zi, qi in zip(z_raw.tolist(), q.tolist()))
        return _Scored(n, 0, False, None, False, reasons)
    dist = pairwise_distances(pos)
    overlapping = (dist + np.diag(np.full(n, np.inf)) < OVERLAP_DISTANCE).any(axis=1)
    orders = orders_from_table(z, dist)
    # EDM's check_stability, with a charged atom's valences those of its isoelectronic element Z - q.
    z_iso = z - q
    z_iso = np.where((z_iso >= 0) & (z_iso <= MAX_ATOMIC_NUMBER), z_iso, 0)
    stable_atoms = (orders.sum(axis=1)[:, None] == _ION_VALENCES[z_iso]).any(axis=1) & KNOWN_ELEMENTS[z] & ~overlapping
    n_stable = int(stable_atoms.sum())
    reasons.extend(f"unstable_atoms:{_symbol(z_raw[i], q[i])}" for i in np.flatnonzero(~stable_atoms))
    unsupported = sorted({_symbol(zi) for zi in z_raw[~KNOWN_ELEMENTS[z]].tolist()})
    reasons.extend(f"unsupported_element:{sym}" for sym in unsupported)
    if overlapping.any():
        reasons.append("overlapping_atoms")
    if unsupported or overlapping.any():
        return _Scored(n, n_stable, n_stable == n, None, False, reasons)
    smiles, n_frags, reason = _smiles_or_reason(z, q, orders)
    if reason is not None:
        reasons.append(reason)
    elif n_frags > 1:
        reasons.append("disconnected")
    return _Scored(n, n_stable, n_stable == n, smiles, n_frags == 1, reasons)


def molecule_smiles(atomic_numbers: Any, positions: Any, charges: Any = None) -> str | None:
    """Canonical SMILES of the largest fragment by EDM's validity pipeline, or None when invalid (sanitize
    fails, empty molecule, unsupported element, overlapping atoms, non-finite positions).  ``positions
    [n, 3]`` in Å, ``charges [n]`` formal charges (default none)."""
    with rdkit_log_silenced():
        return score_molecule(atomic_numbers, positions, charges).smiles


@dataclass
class MoleculeMetrics:
    """EDM's metrics over ``n`` molecules, as fractions in [0, 1], and ``validity_strict`` beside them.

    ``failures`` counts conditions by name, per molecule: ``"empty"``, ``"single_atom"`` (scored
    normally), ``"non_finite_positions"`` (invalid, all atoms unstable), ``"unsupported_element:<symbol>"``
    (an element outside EDM's tables, ``X`` for no element; invalid, that atom unstable),
    ``"overlapping_atoms"`` (two atoms closer than :data:`OVERLAP_DISTANCE`; invalid, both unstable),
    ``"sanitize:<reason>"`` (invalid; reason ``valence``, ``kekulize``, ...), ``"disconnected"`` (valid by
    EDM's rule, not strictly valid); and per unstable atom ``"unstable_atoms:<element>"`` (``N+``, ``O-``
    for charged atoms).
    """

    n: int
    atom_stability: float
    mol_stability: float
    validity: float
    uniqueness: float
    valid_and_unique: float
    novelty: float | None
    failures: dict[str, int] = field(default_factory=dict)
    validity_strict: float = 0.0
    n_atoms: int = 0
    n_valid: int = 0
    n_valid_strict: int = 0
    n_unique: int = 0
    n_novel: int | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable ``{n, atom_stability, mol_stability, validity, validity_strict, uniqueness,
        valid_and_unique, novelty, failures}`` (fractions; ``failures`` as counts)."""
        return {
            "n": int(self.n),
            "atom_stability": float(self.atom_stability),
            "mol_stability": float(self.mol_stability),
            "validity": float(self.validity),
            "validity_strict": float(self.validity_strict),
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
            ("strict validity (connected)", f"{100 * self.validity_strict:.2f} %"),
            ("uniqueness (of valid)", f"{100 * self.uniqueness:.2f} %"),
            ("valid and unique", f"{100 * self.valid_and_unique:.2f} %"),
            ("novelty (of unique)", "-" if self.novelty is None else f"{100 * self.novelty:.2f} %"),
        ]
        return text_table(rows, self.failures)

    def __str__(self) -> str:
        return self.table()


def evaluate_molecules(
    molecules: Iterable[tuple[Any, Any]],
    reference_smiles: set[str] | None = None,
    progress: bool = False,
) -> MoleculeMetrics:
    """EDM's metrics of ``molecules``: pairs ``(atomic_numbers [n] int, positions [n, 3] Å)`` (numpy arrays
    or tensors), triples ``(atomic_numbers, positions, charges [n] int)``, or :class:`Molecule` s (scored
    with their ``charges``).  ``reference_smiles`` (e.g. the training set through :func:`molecule_smiles`)
    enables novelty.  ``progress`` shows a tqdm bar."""
    iterable: Iterable[tuple[Any, Any]] = molecules
    if progress:
        iterable = progress_bar(molecules, desc="evaluating molecules", unit="mol")
    start = time.perf_counter()
    n = n_atoms = n_stable_atoms = n_stable_mols = n_strict = 0
    failures: Counter[str] = Counter()
    valid: list[str] = []
    with rdkit_log_silenced():
        for molecule in iterable:
            charges = molecule[2] if len(molecule) == 3 else getattr(molecule, "charges", None)
            s = score_molecule(molecule[0], molecule[1], charges)
            n += 1
            n_atoms += s.n_atoms
            n_stable_atoms += s.n_stable_atoms
            n_stable_mols += int(s.stable)
            failures.update(s.reasons)
            if s.smiles is not None:
                valid.append(s.smiles)
                n_strict += int(s.connected)
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
        validity_strict=n_strict / n if n else 0.0,
        n_atoms=n_atoms,
        n_valid=len(valid),
        n_valid_strict=n_strict,
        n_unique=len(unique),
        n_novel=novel,
        seconds=time.perf_counter() - start,
    )
