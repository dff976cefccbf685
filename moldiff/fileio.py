"""Small file helpers shared by every domain: atomic text writes and checksums of cached arrays."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

import numpy as np

__all__ = ["write_atomically", "array_checksum"]


def write_atomically(path: str | os.PathLike[str], write: Callable[[IO[str]], None]) -> Path:
    """Write a text file through ``write(handle)`` into a temporary file in the target folder, then
    ``os.replace`` it onto ``path``: on any error nothing is left behind and an existing file is untouched."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def array_checksum(arrays: dict[str, np.ndarray], keys: Iterable[str]) -> str:
    """sha256 over the named arrays' names, dtypes, shapes and bytes (in the order of ``keys``)."""
    h = hashlib.sha256()
    for k in keys:
        a = np.ascontiguousarray(arrays[k])
        h.update(k.encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()
