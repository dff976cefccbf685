"""A run folder belongs to one live writer.

:class:`RunFolder` takes an exclusive ``flock`` on ``<run_dir>/.lock`` for the life of a training process (the
kernel releases it when the process dies, even by ``kill -9``, so a lock is never stale) and writes the owner's
pid and host into the file for the error message a second writer gets.  While holding it, the folder's
leftover temporary checkpoint files are deleted, and a fresh run over a folder that already holds checkpoints
is refused unless asked to ``overwrite`` them (then they are deleted first): a run folder never mixes the
checkpoints of two runs.
"""

from __future__ import annotations

import datetime
import os
import socket
from pathlib import Path

from ..fileio import lock_file
from .checkpoint import CheckpointError, numbered_checkpoints, remove_temporaries

__all__ = ["RunFolder", "RunFolderError"]


class RunFolderError(CheckpointError):
    """The run folder is held by another live process, or holds another run's checkpoints."""


class RunFolder:
    """Exclusive use of ``run_dir`` (a context manager).

    Args:
        run_dir: the run's folder (``runs_root/<experiment>/<name>``); checkpoints go to ``run_dir/checkpoints``.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self._fd: int | None = None

    def acquire(self) -> RunFolder:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / ".lock"
        fd = lock_file(path)
        if fd is None:
            owner = path.read_text(errors="replace").strip() or "unknown"
            raise RunFolderError(
                f"{self.run_dir} is in use by another training process ({owner}); wait for it to finish, or give "
                "this run another name (--set name=...)"
            ) from None
        os.ftruncate(fd, 0)
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), 0)
        self._fd = fd
        remove_temporaries(self.ckpt_dir)
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # releases the lock
            self._fd = None

    def __enter__(self) -> RunFolder:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def checkpoints(self) -> list[Path]:
        """The run's checkpoint files (``last.pt`` and ``step_N.pt``)."""
        last = self.ckpt_dir / "last.pt"
        return [p for _, p in numbered_checkpoints(self.ckpt_dir)] + ([last] if last.is_file() else [])

    def start_fresh(self, overwrite: bool) -> None:
        """Prepare for a run from step 0: refuse if checkpoints exist (``overwrite=False``), else delete them."""
        existing = self.checkpoints()
        if not existing:
            return
        if not overwrite:
            raise RunFolderError(
                f"{self.run_dir} already holds checkpoints of an earlier run ({', '.join(p.name for p in existing)}). "
                "Continue it with --resume auto, give this run another name (--set name=...), or start it over "
                "with --overwrite (deletes those checkpoints)"
            )
        for p in existing:
            p.unlink(missing_ok=True)
