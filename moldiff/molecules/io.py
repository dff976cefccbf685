"""Molecule files: read SDF / XYZ / extended XYZ, write SDF (with the evaluator's bonds) and extended XYZ.

A molecule is a pair ``(atomic_numbers [n] int64, positions [n, 3] float64 in Å)``; one read from a file is
a :class:`~moldiff.molecules.evaluate.Molecule` (such a pair that also carries the SDF's formal charges).

* Reading picks the format from the suffix (``.sdf``, ``.xyz``, ``.extxyz``; case-insensitive).  A record
  or frame that does not parse, a truncated file, or NaN/inf coordinates raise :class:`MoleculeFileError`
  naming the file and the record (0-based) -- never a silent skip.  A missing file raises
  ``FileNotFoundError`` with the path.  An empty (whitespace-only) file holds zero molecules.
* An XYZ symbol that is no element (``Xx``) is not corruption: the atom is read as atomic number 0, which
  the evaluator scores as an unsupported element (molecule invalid), and one :class:`MoleculeFileWarning`
  names the frames, atoms and symbols.  Real elements outside the evaluator's tables are read as they are.
* Writing is atomic: a temporary file in the target folder, then ``os.replace``; on any error nothing is
  left behind and an existing file is untouched.  SDF gets EDM's distance-rule bonds
  (:func:`moldiff.molecules.evaluate.build_rdkit_mol`), unsanitized and not kekulized, so any molecule can
  be written (positions to 4 decimals, the V2000 format's precision).  XYZ is extended XYZ through ASE
  (8 decimals).
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from rdkit import Chem

from moldiff.fileio import write_atomically as _write_atomically
from moldiff.molecules.bonds import as_numpy
from moldiff.molecules.evaluate import Molecule, formal_charges, build_rdkit_mol, rdkit_log_silenced

__all__ = [
    "Molecule",
    "MoleculeFileError",
    "MoleculeFileWarning",
    "read_molecules",
    "write_sdf",
    "write_rdkit_sdf",
    "write_xyz",
    "SUFFIXES",
]

#: Readable suffixes and their format.
SUFFIXES = {".sdf": "sdf", ".xyz": "extxyz", ".extxyz": "extxyz"}

_SDF_TERMINATOR = re.compile(r"^\$\$\$\$[ \t\r]*$", re.MULTILINE)
_MOL_END = re.compile(r"^M  END", re.MULTILINE)


class MoleculeFileError(ValueError):
    """A molecule file that cannot be read (corrupt, truncated, unsupported suffix, NaN coordinates)."""


class MoleculeFileWarning(UserWarning):
    """A molecule file read with a caveat (an XYZ symbol that is no element, read as atomic number 0)."""


def _format_of(path: Path) -> str:
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise MoleculeFileError(
            f"{path}: unsupported molecule file suffix {path.suffix!r} (expected one of {sorted(SUFFIXES)})"
        )
    return fmt


def read_molecules(path: str | os.PathLike[str]) -> list[Molecule]:
    """All molecules of an ``.sdf``, ``.xyz`` or ``.extxyz`` file as :class:`Molecule` s: ``(Z [n] int64,
    positions [n, 3] Å)`` pairs with ``charges`` (SDF: formal charges ``[n]`` int64; XYZ: None).  Hydrogens
    are kept; SDF is read unsanitized (``SDMolSupplier(removeHs=False, sanitize=False)``), XYZ frame by frame
    through ASE's extended-XYZ reader."""
    path = Path(path)
    fmt = _format_of(path)
    if not path.is_file():
        raise FileNotFoundError(2, "molecule file not found", str(path))
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        return []
    molecules = _read_sdf(path, text) if fmt == "sdf" else _read_extxyz(path, text)
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
            charges = np.array([a.GetFormalCharge() for a in mol.GetAtoms()], dtype=np.int64)
            if mol.GetNumConformers():
                pos = np.asarray(mol.GetConformer().GetPositions(), dtype=np.float64).reshape(len(z), 3)
            else:
                pos = np.zeros((len(z), 3))
            out.append(Molecule(z, pos, charges))
    if len(out) != len(records):
        raise MoleculeFileError(
            f"{path}: SDF record {len(out)} (0-based) is truncated or could not be parsed "
            f"({len(records)} records in the text, {len(out)} read)"
        )
    return out


def _read_extxyz(path: Path, text: str) -> list[Molecule]:
    # Frames are cut from the text here (a count line, a comment line, that many atom lines; blank lines
    # between frames are skipped) so that every error and warning names its frame.
    lines = io.StringIO(text).readlines()  # split at '\n' only, as ASE reads a file
    out: list[Molecule] = []
    unknown: list[str] = []
    start = 0
    while start < len(lines):
        if not lines[start].strip():
            start += 1
            continue
        k = len(out)
        try:
            n_atoms = int(lines[start])
        except ValueError:
            raise MoleculeFileError(
                f"{path}: frame {k} (0-based) does not start with an atom count (line {start + 1}: "
                f"{lines[start].strip()[:40]!r})"
            ) from None
        end = start + 2 + n_atoms
        if n_atoms < 0 or end > len(lines):
            raise MoleculeFileError(f"{path}: frame {k} (0-based) is truncated ({n_atoms} atoms announced)")
        molecule, symbols = _read_frame(path, k, lines[start:end])
        out.append(molecule)
        unknown += [f"frame {k} {sym!r} (atoms {', '.join(map(str, atoms))})" for sym, atoms in symbols.items()]
        start = end
    if unknown:
        more = f"; and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        warnings.warn(
            f"{path}: symbols that are no element, read as atomic number 0 (the evaluator scores such a "
            f"molecule invalid): {'; '.join(unknown[:10])}{more}",
            MoleculeFileWarning,
            stacklevel=3,
        )
    return out


def _read_frame(path: Path, k: int, lines: list[str]) -> tuple[Molecule, dict[str, list[int]]]:
    """One XYZ frame (its count, comment and atom lines) -> the molecule and ``{symbol: [atom index]}`` of the
    symbols that are no element (ASE raises ``KeyError(symbol)``; they are re-read as ``X``, Z = 0)."""
    from ase.io.extxyz import read_xyz

    _check_declared_columns(path, k, lines)
    unknown: dict[str, list[int]] = {}
    while True:
        try:
            atoms = next(read_xyz(io.StringIO("".join(lines)), 0))
            break
        except KeyError as exc:  # a symbol ASE does not know; anything else is a corrupt frame
            sym = str(exc.args[0]) if exc.args else ""
            token = re.compile(rf"(?<!\S){re.escape(sym)}(?!\S)", re.IGNORECASE)
            hits = [i for i, line in enumerate(lines[2:]) if token.search(line)]
            if not sym or sym in unknown or not hits:
                raise MoleculeFileError(f"{path}: frame {k} (0-based) could not be parsed (KeyError: {exc})") from exc
            unknown[sym] = hits
            lines = lines[:2] + [token.sub("X", line) for line in lines[2:]]
        except Exception as exc:  # ase raises XYZError (an OSError), ValueError, IndexError, ...
            raise MoleculeFileError(
                f"{path}: frame {k} (0-based) could not be parsed ({type(exc).__name__}: {exc})"
            ) from exc
    z = np.asarray(atoms.numbers, dtype=np.int64).copy()
    return Molecule(z, np.asarray(atoms.positions, dtype=np.float64).copy()), unknown


_PROPERTIES = re.compile(r"""(?<![^\s])Properties\s*=\s*["']?([^\s"']+)""", re.IGNORECASE)


def _check_declared_columns(path: Path, k: int, lines: list[str]) -> None:
    """A ``Properties=`` spec that declares more columns per atom than the frame's atom lines hold is a
    :class:`MoleculeFileError` before ASE sees it: ASE sizes its per-atom arrays from the declared counts, so a
    count such as ``pos:R:3999999999`` in a 100-byte file would allocate tens of gigabytes."""
    match = _PROPERTIES.search(lines[1]) if len(lines) > 1 else None
    if match is None:
        return
    fields = match.group(1).split(":")
    counts = fields[2::3]
    if len(fields) % 3 or not all(c.isdigit() for c in counts):
        return  # not a spec ASE can read: it raises its own error, wrapped by the caller
    declared = sum(int(c) for c in counts)
    available = max((len(line.split()) for line in lines[2:]), default=0)
    if declared > available:
        raise MoleculeFileError(
            f"{path}: frame {k} (0-based): its Properties= declares {declared} columns per atom, but its atom lines "
            f"have at most {available}"
        )


def _molecule(m: Any) -> Molecule:
    """A pair, triple ``(Z, positions, charges)`` or :class:`Molecule` -> a checked :class:`Molecule`."""
    z = np.asarray(as_numpy(m[0])).astype(np.int64).reshape(-1)
    pos = np.asarray(as_numpy(m[1]), dtype=np.float64)
    if pos.shape != (len(z), 3):
        raise ValueError(f"positions must have shape [{len(z)}, 3], got {pos.shape}")
    charges = m[2] if len(m) == 3 else getattr(m, "charges", None)
    return Molecule(z, pos, None if charges is None else formal_charges(charges, len(z)))


def write_sdf(path: str | os.PathLike[str], molecules: Iterable[Any]) -> Path:
    """Write ``molecules`` (``(Z [n], positions [n, 3] Å)`` pairs, ``(Z, positions, charges [n])`` triples or
    :class:`Molecule` s; formal charges are written) to an SDF file with EDM's distance-rule bonds,
    atomically.  Each record is named by its 0-based index.  Returns the path."""
    mols = [_molecule(m) for m in molecules]
    return write_rdkit_sdf(path, (build_rdkit_mol(m[0], m[1], charges=m.charges) for m in mols))


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
