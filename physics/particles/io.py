"""Particle configurations as extended-XYZ files (through ASE).

A sample set is ``x [B, n, d]`` with ``d`` = 2 or 3 (one frame per configuration, all of one element,
argon by default).  2D systems are written with ``z = 0``; every frame has ``pbc = False``.

* Writing is atomic: a temporary file in the target folder, then ``os.replace``; on any error nothing is
  left behind and an existing file is untouched.  Non-finite positions raise ``ValueError`` naming the
  frame before anything is written; a missing parent folder raises ``FileNotFoundError``.
* Reading raises ``FileNotFoundError`` (naming the path) for a missing file and
  :class:`ParticleFileError` (naming the file, and the frame where there is one) for a file ASE cannot
  parse, frames with different particle counts, non-finite coordinates, or 2D data with ``z != 0``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from moldiff.fileio import write_atomically

__all__ = ["ParticleFileError", "write_extxyz", "read_extxyz", "read_extxyz_energies"]


class ParticleFileError(ValueError):
    """A particle file that cannot be read (unparsable, ragged frames, non-finite coordinates)."""


def _positions(x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 3 or a.shape[2] not in (2, 3):
        raise ValueError(f"positions must have shape [B, n, 2 or 3], got {a.shape}")
    return a


def write_extxyz(
    x: Any,
    path: str | os.PathLike[str],
    *,
    energies: Any = None,
    symbol: str = "Ar",
    info: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
) -> Path:
    """Write the configurations ``x [B, n, d]`` (``d`` = 2 or 3) to an extended-XYZ file, atomically;
    returns the path.

    ``energies [B]`` (optional) is stored per frame as ``atoms.info["energy"]``; ``info`` (one mapping
    for all frames, or one per frame) adds further per-frame keys (scalars or strings).  Every atom is
    ``symbol``.  2D positions are padded with ``z = 0``.  Non-finite positions raise ``ValueError``
    naming the first bad frame (0-based) and nothing is written.  ``B = 0`` writes an empty file.
    """
    import ase.io
    from ase import Atoms

    path = Path(path)
    a = _positions(x)
    b, n, d = a.shape
    bad = ~np.isfinite(a).all(axis=(1, 2))
    if bad.any():
        raise ValueError(f"{path}: frame {int(np.argmax(bad))} (0-based) has non-finite positions "
                         f"({int(bad.sum())} of {b} frames); nothing written")
    e = None
    if energies is not None:
        e = (energies.detach().to("cpu", torch.float64).numpy() if isinstance(energies, Tensor)
             else np.asarray(energies, dtype=np.float64)).reshape(-1)
        if len(e) != b:
            raise ValueError(f"{len(e)} energies for {b} configurations")
    if info is None or isinstance(info, Mapping):
        infos: list[Mapping[str, Any]] = [info or {}] * b
    else:
        infos = list(info)
        if len(infos) != b:
            raise ValueError(f"{len(infos)} info mappings for {b} configurations")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(2, "folder of the output file does not exist", str(folder))

    if d == 2:
        a = np.concatenate([a, np.zeros((b, n, 1))], axis=2)
    frames = []
    for i in range(b):
        atoms = Atoms(symbols=[symbol] * n, positions=a[i], pbc=False)
        for k, v in infos[i].items():
            atoms.info[k] = v
        if e is not None:
            atoms.info["energy"] = float(e[i])
        frames.append(atoms)

    def write(fh) -> None:
        if frames:
            ase.io.write(fh, frames, format="extxyz")

    return write_atomically(path, write)


def _read_frames(path: str | os.PathLike[str]) -> tuple[Path, list[Any]]:
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "particle file not found", str(path))
    if not path.read_text(encoding="utf-8", errors="replace").strip():
        return path, []
    try:
        frames = ase.io.read(str(path), index=":", format="extxyz")
    except Exception as exc:  # ase raises XYZError (an OSError), KeyError, ValueError, IndexError, ...
        raise ParticleFileError(f"{path}: not a readable extended-XYZ file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(frames, list):
        frames = [frames]
    return path, frames


def read_extxyz(path: str | os.PathLike[str], *, dim: int = 3) -> np.ndarray:
    """All configurations of an extended-XYZ file as a float64 array ``[B, n, dim]`` (``dim`` = 2 or 3).

    ``dim=2`` keeps ``x, y`` and requires ``z == 0`` (as :func:`write_extxyz` writes 2D systems).  An
    empty file gives ``[0, 0, dim]``.  Errors: ``FileNotFoundError`` (naming the path) for a missing
    file; :class:`ParticleFileError` naming the file for an unparsable file (with ASE's message), and
    naming the frame (0-based) for a particle count that differs from frame 0's, non-finite
    coordinates, or non-zero ``z`` with ``dim=2``.
    """
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}")
    path, frames = _read_frames(path)
    if not frames:
        return np.zeros((0, 0, dim))
    n = len(frames[0])
    out = np.empty((len(frames), n, dim))
    for i, atoms in enumerate(frames):
        if len(atoms) != n:
            raise ParticleFileError(f"{path}: frame {i} (0-based) has {len(atoms)} particles, frame 0 has {n}")
        pos = np.asarray(atoms.positions, dtype=np.float64)
        if not np.isfinite(pos).all():
            raise ParticleFileError(f"{path}: frame {i} (0-based) has non-finite coordinates")
        if dim == 2 and np.any(pos[:, 2] != 0):
            raise ParticleFileError(f"{path}: frame {i} (0-based) has z != 0; not a 2D system (read with dim=3)")
        out[i] = pos[:, :dim]
    return out


def read_extxyz_energies(path: str | os.PathLike[str]) -> np.ndarray:
    """The per-frame ``energy`` values ``[B]`` of an extended-XYZ file (``NaN`` where a frame has none);
    same errors as :func:`read_extxyz` for a missing or unparsable file."""
    path, frames = _read_frames(path)
    out = np.full(len(frames), np.nan)
    for i, atoms in enumerate(frames):
        if "energy" in atoms.info:
            out[i] = float(atoms.info["energy"])
        elif atoms.calc is not None and "energy" in getattr(atoms.calc, "results", {}):
            out[i] = float(atoms.calc.results["energy"])
    return out
