"""Small file helpers shared by every domain: atomic text writes and checksums of cached arrays."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

import numpy as np

__all__ = ["cache_dir", "lock_file", "file_mode", "atomic_path", "write_atomically", "array_checksum", "write_npz_cache", "read_npz_cache", "cached_strings",
           "check_output_path", "write_output", "write_json"]


def cache_dir(name: str) -> Path:
    """The cache folder of one kind of data: ``$MOLDIFF_CACHE/<name>``, or ``~/.cache/moldiff/<name>``."""
    return Path(os.environ.get("MOLDIFF_CACHE") or Path.home() / ".cache" / "moldiff") / name


def lock_file(path: str | os.PathLike[str], timeout: float = 0.0) -> int | None:
    """An exclusive ``flock`` on ``path`` (created if absent), retried for up to ``timeout`` seconds: the open file
    descriptor that holds it (``os.close`` releases it; so does the process's death, even by ``kill -9``, so a
    lock is never stale), or ``None`` if another process kept it."""
    import fcntl
    import time

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.1)


def file_mode(mode: int = 0o666) -> int:
    """``mode`` with the process's umask applied: the permissions ``open()`` would give a new file (``mkstemp``
    makes 0600 files, which atomic writers widen to this so every output is alike)."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``path`` (``.NAME.<random>.tmp<suffix>``) to write the file to: when the block
    ends it gets the permissions of any new file (:func:`file_mode`) and replaces ``path`` atomically; on any
    error it is removed and ``path`` is untouched."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp" + suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomically(path: str | os.PathLike[str], write: Callable[[IO[str]], None]) -> Path:
    """Write a text file through ``write(handle)`` into a temporary file in the target folder, then
    ``os.replace`` it onto ``path``: on any error nothing is left behind and an existing file is untouched."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def array_checksum(arrays: dict[str, np.ndarray], keys: Iterable[str]) -> str:
    """sha256 over the named arrays' names, dtypes, shapes and bytes (in the order of ``keys``)."""
    h = hashlib.sha256()
    for k in keys:
        a = np.ascontiguousarray(arrays[k])
        h.update(k.encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_npz_cache(path: str | os.PathLike[str], arrays: dict[str, np.ndarray], meta: dict,
                    keys: Iterable[str] | None = None) -> dict:
    """Write ``arrays`` and ``meta`` (JSON, plus the checksum of the arrays named in ``keys``, default all, in
    that order) to an ``.npz`` atomically (a temporary file in the same folder, then ``os.replace``); returns
    the stored metadata.  ``OSError`` on failure, with nothing left behind."""
    path = Path(path)
    meta = dict(meta, checksum=array_checksum(arrays, list(arrays) if keys is None else list(keys)))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, meta=np.asarray(json.dumps(meta)), **arrays)
    return meta


def read_npz_cache(path: str | os.PathLike[str], keys: Iterable[str]) -> tuple[dict[str, np.ndarray], dict]:
    """Read the arrays ``keys`` of a cache written by :func:`write_npz_cache` (with the same ``keys``) and verify
    its checksum: ``(arrays, meta)``.
    ``ValueError`` (bad checksum, missing metadata), ``KeyError`` (missing array) or ``OSError`` when unusable."""
    keys = list(keys)
    with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:  # our handle: closed even if np.load fails
        meta = json.loads(str(z["meta"]))
        arrays = {k: z[k] for k in keys}
    if meta.get("checksum") != array_checksum(arrays, keys):
        raise ValueError("checksum mismatch")
    return arrays, meta


def cached_strings(path: str | os.PathLike[str] | None, header: str, build: Callable[[], set[str]]) -> set[str]:
    """A set of strings cached in a text file: ``header``, one string per line, ``# end``.  A file whose header
    differs (stale) or that lacks the end line (incomplete) is reported and rebuilt with ``build()``, written
    atomically; with ``path=None`` nothing is cached."""
    import warnings

    if path is not None and Path(path).is_file():
        lines = Path(path).read_text().splitlines()
        if lines and lines[0] == header and lines[-1] == "# end":
            return set(lines[1:-1])
        warnings.warn(f"{path} is stale or incomplete; rebuilding it", stacklevel=3)
    values = build()
    if path is not None:
        write_atomically(path, lambda fh: fh.write("\n".join([header, *sorted(values), "# end"]) + "\n"))
    return values


def check_output_path(out: str | Path | None, suffixes: tuple[str, ...], what: str) -> Path | None:
    """Reject an output path that is a folder, has an unsupported suffix or cannot be written (its folder, or the
    nearest existing folder above it, refuses a new file), before any work is done; errors name ``out``."""
    if out is None:
        return None
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"{out}: is a folder; give a file name for the {what}")
    if suffixes and out.suffix.lower() not in suffixes:
        raise ValueError(f"{out}: {what} are written as {', '.join(suffixes)}")
    folder = out.parent if str(out.parent) else Path(".")
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"cannot write {out}: {folder} is not a folder")
    try:  # a real probe: permission bits do not tell root, or a read-only file system, apart
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{out.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"cannot write {out}: {folder} does not accept new files ({e.strerror or e})") from None
    return out


def write_output(out: Path, write) -> None:
    """``write(tmp)`` to a temporary file beside ``out`` (same suffix, lower case), then rename it onto ``out``:
    a failure leaves nothing behind; a file-system error names ``out``, not the temporary file."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out, suffix=out.suffix.lower()) as tmp:  # np.save appends .npy to a .NPY name
            write(tmp)
    except OSError as e:
        raise ValueError(f"cannot write {out}: {e.strerror or e}") from e


def write_json(path: str | os.PathLike[str], data: dict) -> Path:
    """``data`` as indented, key-sorted JSON, written atomically (the parent folder is created)."""
    import json

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(out, lambda fh: fh.write(json.dumps(data, indent=2, sort_keys=True) + "\n"))
