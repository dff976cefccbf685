"""Checkpoints: a dict of state_dicts and plain values, written atomically, loadable with ``weights_only``."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_checkpoint", "load_checkpoint", "find_resume_checkpoint", "CheckpointError"]


class CheckpointError(RuntimeError):
    pass


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsync, rename.
    A crash leaves either the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``); clear error if not."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the file is unusable
        raise CheckpointError(f"{path}: not a readable moldiff checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a moldiff checkpoint (missing 'model' or 'config')")
    return state


def find_resume_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """``last.pt`` in ``ckpt_dir`` if present, else the highest ``step_N.pt``, else None."""
    ckpt_dir = Path(ckpt_dir)
    if (ckpt_dir / "last.pt").is_file():
        return ckpt_dir / "last.pt"
    steps = sorted(
        (int(m.group(1)), p) for p in ckpt_dir.glob("step_*.pt") if (m := re.fullmatch(r"step_(\d+)\.pt", p.name))
    )
    return steps[-1][1] if steps else None


def prune_checkpoints(ckpt_dir: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest ``step_N.pt`` files."""
    ckpt_dir = Path(ckpt_dir)
    steps = sorted(
        (int(m.group(1)), p) for p in ckpt_dir.glob("step_*.pt") if (m := re.fullmatch(r"step_(\d+)\.pt", p.name))
    )
    for _, p in steps[: max(0, len(steps) - keep)]:
        p.unlink(missing_ok=True)
