"""Checkpoints: a dict of state_dicts and plain values, written atomically, loadable with ``weights_only``.

A run's ``checkpoints/`` folder holds ``step_N.pt`` files (the newest ``train.keep_checkpoints``) and
``last.pt``, a copy of the newest.  :func:`latest_checkpoint` resumes from the newest one that loads: a
``step_N.pt`` newer than ``last.pt`` (a kill between the two writes) wins, and a corrupt file is skipped with
a warning for the next older one.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from ..fileio import atomic_path

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "numbered_checkpoints",
           "prune_checkpoints", "remove_temporaries", "CheckpointError", "ShippedModelFile"]

_STEP_RE = re.compile(r"step_(\d+)\.pt")


class CheckpointError(RuntimeError):
    pass


class ShippedModelFile(CheckpointError):
    """A shipped model's file (EMA weights only, :mod:`moldiff.pretrained`) where a training checkpoint was expected."""


def _shipped_hint(path: Path, state: dict) -> str:
    from ..pretrained import shipped_models  # lazy: moldiff.pretrained imports this module

    names = [n for n, m in shipped_models().items() if m.file.resolve() == path.resolve()]
    name = names[0] if names else "NAME"
    how = (f"sample it with --pretrained {name} (Python: moldiff.pretrained({name!r}))" if names else
           "sample or evaluate it by passing it to `moldiff sample` / `moldiff eval` as it is")
    return (f"{path}: a shipped model file (task {state.get('task')!r}: EMA weights, no optimiser), not a training "
            f"checkpoint; {how}, or warm-start a new run from it with train.init="
            f"{'pretrained:' + name if names else path}")


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsync, rename.
    A crash leaves either the old file or the new one (and at worst a ``.NAME.*.tmp`` file, which
    :func:`remove_temporaries` deletes when the run is next opened), never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    return path


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``); clear error if not."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the file is unusable
        raise CheckpointError(f"{path}: not a readable moldiff checkpoint ({type(e).__name__}: {e})") from e
    if isinstance(state, dict) and str(state.get("format", "")).startswith("moldiff-pretrained"):
        raise ShippedModelFile(_shipped_hint(path, state))
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a moldiff checkpoint (missing 'model' or 'config')")
    return state


def numbered_checkpoints(ckpt_dir: str | Path) -> list[tuple[int, Path]]:
    """``(N, step_N.pt)`` in ``ckpt_dir``, oldest first."""
    ckpt_dir = Path(ckpt_dir)
    return sorted((int(m.group(1)), p) for p in ckpt_dir.glob("step_*.pt") if (m := _STEP_RE.fullmatch(p.name)))


def latest_checkpoint(ckpt_dir: str | Path, map_location: Any = "cpu") -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``ckpt_dir`` that loads, and its state; None if there is none.

    ``last.pt`` and the ``step_N.pt`` files are compared by step, so a ``step_N.pt`` written just before a
    kill that prevented the ``last.pt`` copy is not lost; unreadable files are skipped with a warning."""
    ckpt_dir = Path(ckpt_dir)
    best: tuple[int, Path, dict[str, Any]] | None = None
    last = ckpt_dir / "last.pt"
    if last.is_file():
        try:
            state = load_checkpoint(last, map_location)
            best = (int(state["step"]), last, state)
        except CheckpointError as e:
            warnings.warn(f"skipping a corrupt checkpoint: {e}", stacklevel=2)
    for n, path in reversed(numbered_checkpoints(ckpt_dir)):
        if best is not None and n <= best[0]:
            break
        try:
            return path, load_checkpoint(path, map_location)
        except CheckpointError as e:
            warnings.warn(f"skipping a corrupt checkpoint: {e}", stacklevel=2)
    return None if best is None else (best[1], best[2])


def prune_checkpoints(ckpt_dir: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest ``step_N.pt`` files."""
    steps = numbered_checkpoints(ckpt_dir)
    for _, p in steps[: max(0, len(steps) - keep)]:
        p.unlink(missing_ok=True)


def remove_temporaries(ckpt_dir: str | Path) -> list[Path]:
    """Delete the temporary files of interrupted saves (``.NAME.*.tmp``); call only while holding the run
    folder (:class:`~moldiff.training.run_folder.RunFolder`), so that no live writer owns them."""
    removed = []
    for p in Path(ckpt_dir).glob(".*.tmp"):
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed
