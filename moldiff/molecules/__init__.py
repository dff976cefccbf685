"""Molecules: QM9 data, EDM's encoding and task, the EDM bond rule and metrics (stability, validity,
uniqueness, novelty), molecule files (SDF, xyz/extxyz) and pictures.

Names are imported lazily, so ``import moldiff.molecules.qm9`` does not pull in RDKit.
"""

from __future__ import annotations

import importlib

_NAMES = {
    "bonds": ["ALLOWED_BONDS", "BONDS1", "BONDS2", "BONDS3", "MARGINS", "QM9_ATOMIC_NUMBERS", "atom_stability",
              "bond_orders", "molecule_stable"],
    "evaluate": ["Molecule", "MoleculeMetrics", "build_rdkit_mol", "evaluate_molecules", "molecule_smiles"],
    "io": ["MoleculeFileError", "MoleculeFileWarning", "read_molecules", "write_sdf", "write_xyz"],
    "qm9": ["QM9", "QM9CacheError"],
    "features": ["MoleculeEncoding", "UnsupportedElementError", "ELEMENTS"],
    "task": ["QM9Task", "QM9Config"],
    "draw": ["molecule_grid"],
    "api": ["evaluate_molecule_file", "evaluate_dataset", "evaluate_graph_file", "relax_graph_file",
            "evaluate_property_conditioning"],
    "relax": ["relax_molecules"],
}
_WHERE = {name: module for module, names in _NAMES.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
