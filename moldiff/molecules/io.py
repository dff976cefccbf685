"""Molecule files: read SDF / XYZ / extended XYZ, write SDF (with the evaluator's bonds) and extended XYZ.

A molecule is a pair ``(atomic_numbers [n] int64, positions [n, 3] float64 in Å)``.

* Reading picks the format from the suffix (``.sdf``, ``.xyz``, ``.extxyz``; case-insensitive).  A record
  or frame that does not parse, a truncated file, or NaN/inf coordinates raise :class:`MoleculeFileError`
  naming the file and the record (0-based) -- never a silent skip.  A missing file raises
  ``FileNotFoundError`` with the path.  An empty (whitespace-only) file holds zero molecules.
* Writing is atomic: a temporary file in the target folder, then ``os.replace``; on any error nothing is
  left behind and an existing file is untouched.  SDF gets EDM's distance-rule bonds
  (:func:`moldiff.molecules.evaluate.build_rdkit_mol`), unsanitized and not kekulized, so any molecule can
  be written (positions to 4 decimals, the V2000 format's precision).  XYZ is extended XYZ through ASE
  (8 decimals).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from rdkit import Chem

from moldiff.fileio import write_atomically as _write_atomically
from moldiff.molecules.bonds import _as_numpy
from moldiff.molecules.evaluate import build_rdkit_mol, rdkit_log_silenced

__all__ = ["MoleculeFileError", "read_molecules", "write_sdf", "write_rdkit_sdf", "write_xyz", "SUFFIXES"]

Molecule = tuple[np.ndarray, np.ndarray]

#: Readable suffixes and their format.
SUFFIXES = {".sdf": "sdf", ".xyz": "extxyz", ".extxyz": "extxyz"}

_SDF_TERMINATOR = re.compile(r"^\$\$\$\$[ \t\r]*$", re.MULTILINE)
_MOL_END = re.compile(r"^M  END", re.MULTILINE)


class MoleculeFileError(ValueError):
    """A molecule file that cannot be read (corrupt, truncated, unsupported suffix, NaN coordinates)."""


def _format_of(path: Path) -> str:
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise MoleculeFileError(
            f"{path}: unsupported molecule file suffix {path.suffix!r} (expected one of {sorted(SUFFIXES)})"
        )
    return fmt


def read_molecules(path: str | os.PathLike[str]) -> list[Molecule]:
    """All molecules of an ``.sdf``, ``.xyz`` or ``.extxyz`` file as ``(Z [n] int64, positions [n, 3] Å)``
    pairs.  Hydrogens are kept; SDF is read unsanitized (``SDMolSupplier(removeHs=False,
    sanitize=False)``), XYZ through ``ase.io.read(path, index=":")``."""
    path = Path(path)
    fmt = _format_of(path)
    if not path.is_file():
        raise FileNotFoundError(2, "molecule file not found", str(path))
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        return []
    molecules = _read_sdf(path, text) if fmt == "sdf" else _read_extxyz(path)
    for i, (_, pos) in enumerate(molecules):
        if not np.isfinite(pos).all():
            kind = "record" if fmt == "sdf" else "frame"
            raise MoleculeFileError(f"{path}: {kind} {i} (0-based) has non-finite coordinates")
    return molecules


def _read_sdf(path: Path, text: str) -> list[Molecule]:
    # Records as the text splits them: RDKit silently drops a trailing record cut off before its counts
    # line, so the count of records is checked against this, and each record must reach "M  END".
    records = [r for r in _SDF_TERMINATOR.split(text) if r.strip()]
    out: list[Molecule] = []
    with rdkit_log_silenced():
        try:
            supplier = Chem.SDMolSupplier(str(path), removeHs=False, sanitize=False)
        except OSError as exc:
            raise MoleculeFileError(f"{path}: not a readable SDF file ({exc})") from exc
        for i, mol in enumerate(supplier):
            if mol is None:
                raise MoleculeFileError(f"{path}: SDF record {i} (0-based) could not be parsed")
            if i < len(records) and not _MOL_END.search(records[i]):
                raise MoleculeFileError(f"{path}: SDF record {i} (0-based) is truncated (no 'M  END')")
            z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
            if mol.GetNumConformers():
                pos = np.asarray(mol.GetConformer().GetPositions(), dtype=np.float64).reshape(len(z), 3)
            else:
                pos = np.zeros((len(z), 3))
            out.append((z, pos))
    if len(out) != len(records):
        raise MoleculeFileError(
            f"{path}: SDF record {len(out)} (0-based) is truncated or could not be parsed "
            f"({len(records)} records in the text, {len(out)} read)"
        )
    return out


def _read_extxyz(path: Path) -> list[Molecule]:
    import ase.io

    try:
        frames = ase.io.read(str(path), index=":", format="extxyz")
    except Exception as exc:  # ase raises XYZError (an OSError), KeyError, ValueError, ...
        raise MoleculeFileError(f"{path}: not a readable XYZ file ({type(exc).__name__}: {exc})") from exc
    return [
        (np.asarray(a.numbers, dtype=np.int64).copy(), np.asarray(a.positions, dtype=np.float64).copy())
        for a in frames
    ]


def _molecule(m: tuple[Any, Any]) -> Molecule:
    z = np.asarray(_as_numpy(m[0])).astype(np.int64).reshape(-1)
    pos = np.asarray(_as_numpy(m[1]), dtype=np.float64)
    if pos.shape != (len(z), 3):
        raise ValueError(f"positions must have shape [{len(z)}, 3], got {pos.shape}")
    return z, pos


def write_sdf(path: str | os.PathLike[str], molecules: Iterable[tuple[Any, Any]]) -> Path:
    """Write ``molecules`` (``(Z [n], positions [n, 3] Å)`` pairs) to an SDF file with EDM's distance-rule
    bonds, atomically.  Each record is named by its 0-based index.  Returns the path."""
    mols = [_molecule(m) for m in molecules]
    return write_rdkit_sdf(path, (build_rdkit_mol(z, pos) for z, pos in mols))


def write_rdkit_sdf(path: str | os.PathLike[str], mols: Iterable[Any]) -> Path:
    """Write unsanitized RDKit molecules to an SDF file as they are (not kekulized), atomically: records named
    by their 0-based index; on any error nothing is left behind.  Returns the path."""
    mols = list(mols)

    def write(fh: IO[str]) -> None:
        writer = Chem.SDWriter(fh)
        writer.SetKekulize(False)
        try:
            for i, mol in enumerate(mols):
                mol.UpdatePropertyCache(strict=False)
                mol.SetProp("_Name", str(i))
                writer.write(mol)
        finally:
            writer.close()

    with rdkit_log_silenced():
        return _write_atomically(path, write)


def write_xyz(
    path: str | os.PathLike[str],
    molecules: Iterable[tuple[Any, Any]],
    comment: str | Sequence[str] | None = None,
) -> Path:
    """Write ``molecules`` to an extended-XYZ file through ASE, atomically.  ``comment`` (one string for
    all frames, or one per frame) is stored as the frame's ``comment`` key.  Returns the path."""
    import ase.io
    from ase import Atoms

    mols = [_molecule(m) for m in molecules]
    if comment is None or isinstance(comment, str):
        comments: list[str | None] = [comment] * len(mols)
    else:
        comments = list(comment)
        if len(comments) != len(mols):
            raise ValueError(f"{len(comments)} comments for {len(mols)} molecules")
    frames = []
    for (z, pos), c in zip(mols, comments):
        atoms = Atoms(numbers=z, positions=pos)
        if c is not None:
            atoms.info["comment"] = " ".join(str(c).split())  # one line
        frames.append(atoms)

    def write(fh: IO[str]) -> None:
        if frames:
            ase.io.write(fh, frames, format="extxyz")

    return _write_atomically(path, write)
