"""Optional relaxation of generated molecules with a classical force field (RDKit MMFF94, UFF as the fallback).

Only positions move: the generated graph (elements, charges, bonds) is kept, so the generated-graph protocol's
validity cannot change.  A molecule is kept as generated when its graph does not sanitise (no force field types
an invalid molecule), when neither force field has parameters for it, when the minimisation gives non-finite
positions, or when the relaxed geometry would turn a molecule that EDM's distance rule finds valid into an invalid
one -- so relaxation never lowers validity in either protocol.  Each reason is counted in the report.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .graph_mol import GraphMolecule, to_rdkit
from ..progress import progress_bar

__all__ = ["RelaxReport", "relax_molecules", "FORCE_FIELDS"]

FORCE_FIELDS = ("mmff", "uff")


@dataclass
class RelaxReport:
    """What :func:`relax_molecules` did: molecules relaxed per force field, kept unchanged per reason, and the
    force-field energy drop (kcal/mol) of the relaxed ones."""

    n: int = 0
    relaxed: Counter = field(default_factory=Counter)  #: force field -> molecules relaxed with it
    kept: Counter = field(default_factory=Counter)  #: reason -> molecules kept as generated
    energy_drop: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"n": self.n, "relaxed": dict(self.relaxed), "kept": dict(self.kept),
                "energy_drop_median": float(np.median(self.energy_drop)) if self.energy_drop else None}

    def summary(self) -> str:
        parts = [f"{v} by {k.upper()}" for k, v in sorted(self.relaxed.items())]
        kept = ", ".join(f"{v} {k}" for k, v in sorted(self.kept.items())) or "none"
        med = f"; median energy drop {np.median(self.energy_drop):.1f} kcal/mol" if self.energy_drop else ""
        return f"relaxed {sum(self.relaxed.values())} of {self.n} molecules ({', '.join(parts) or 'none'}); kept as " \
               f"generated: {kept}{med}"


def _force_field(rd, preferred: str):
    """``(name, force field)`` for an RDKit molecule: ``preferred`` if it has parameters, else the other; None."""
    from rdkit.Chem import AllChem

    order = (preferred, *(f for f in FORCE_FIELDS if f != preferred))
    for name in order:
        if name == "mmff" and AllChem.MMFFHasAllMoleculeParams(rd):
            return name, AllChem.MMFFGetMoleculeForceField(rd, AllChem.MMFFGetMoleculeProperties(rd))
        if name == "uff" and AllChem.UFFHasAllMoleculeParams(rd):
            return name, AllChem.UFFGetMoleculeForceField(rd)
    return None, None


def relax_molecules(mols: list[GraphMolecule], *, force_field: str = "mmff", max_iters: int = 200,
                    progress: bool = False) -> tuple[list[GraphMolecule], RelaxReport]:
    """Minimise each molecule's energy for at most ``max_iters`` iterations with ``force_field`` (``mmff``, falling
    back to ``uff`` where MMFF lacks parameters, or ``uff`` first); returns new molecules (same order) and a
    :class:`RelaxReport`.  Never raises for a bad molecule: it is kept and counted."""
    from .evaluate import score_molecule, rdkit_log_silenced  # lazy: RDKit loads only when molecules are read or scored

    if force_field not in FORCE_FIELDS:
        raise ValueError(f"unknown force field {force_field!r}; choose one of {FORCE_FIELDS}")
    if max_iters < 1:
        raise ValueError(f"max_iters must be >= 1, got {max_iters}")
    report = RelaxReport(n=len(mols))
    out: list[GraphMolecule] = []
    with rdkit_log_silenced():
        for m in progress_bar(mols, enabled=progress, desc="relaxing", unit="mol"):
            new, reason = _relax_one(m, force_field, max_iters, report, score_molecule)
            if reason is not None:
                report.kept[reason] += 1
            out.append(new)
    return out, report


def _relax_one(m: GraphMolecule, preferred: str, max_iters: int, report: RelaxReport, score):
    if m.num_atoms == 0 or not np.isfinite(m.positions).all():
        return m, "empty_or_non_finite"
    try:
        rd = to_rdkit(m, sanitize=True)
    except Exception:  # noqa: BLE001 -- RDKit raises several types for an invalid graph
        return m, "invalid_graph"
    name, ff = _force_field(rd, preferred)
    if ff is None:
        return m, "no_parameters"
    try:
        e0 = ff.CalcEnergy()
        ff.Minimize(maxIts=max_iters)
        e1 = ff.CalcEnergy()
        pos = np.asarray(ff.Positions(), dtype=np.float64).reshape(-1, 3)
    except Exception:  # noqa: BLE001
        return m, "force_field_error"
    if not (np.isfinite(pos).all() and np.isfinite(e0) and np.isfinite(e1)):
        return m, "non_finite_result"
    relaxed = GraphMolecule(m.atomic_numbers, m.charges, pos - pos.mean(0), m.bonds)
    if score(m.atomic_numbers, m.positions, m.charges).smiles is not None and \
            score(relaxed.atomic_numbers, relaxed.positions, relaxed.charges).smiles is None:
        return m, "would_lower_edm_validity"
    report.relaxed[name] += 1
    report.energy_drop.append(float(e0 - e1))
    return relaxed, None
