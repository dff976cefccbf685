"""Warm starts (``train.init``): a fresh run that begins from another run's EMA weights, or a shipped model's,
with a fresh optimiser.

The source is a training checkpoint (its EMA weights) or a shipped model file, by path or as ``pretrained:NAME``.
It must be of the same task; every weight it holds must exist in the new network with the same shape
(:class:`CheckpointError` naming both shapes otherwise, before any training).  Weights the new network has and the
source lacks -- a module that a recipe option adds, such as self-conditioning's input projections -- keep their
fresh initialisation and are listed; the options that add them initialise them so that the network computes the
same function as without them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from .checkpoint import CheckpointError
from .lineage import Lineage
from ..pretrained import pretrained_path

__all__ = ["InitSource", "read_init", "load_init", "resolve_source"]

PRETRAINED_PREFIX = "pretrained:"


@dataclass
class InitSource:
    """What ``train.init`` names: its weights (float32), task, training step, lineage and a description."""

    weights: dict[str, Tensor]
    task: str
    step: int
    lineage: Lineage
    description: str
    fresh: list[str] = field(default_factory=list)  #: keys initialised fresh (filled by :func:`load_init`)


def resolve_source(source: str, key: str = "train.init") -> Path:
    """The file ``source`` names -- a path, or ``pretrained:NAME`` (a shipped model) -- checked to exist;
    :class:`CheckpointError` naming the config ``key`` otherwise."""
    if source.startswith(PRETRAINED_PREFIX):
        try:
            return pretrained_path(source[len(PRETRAINED_PREFIX):])
        except (ValueError, FileNotFoundError) as e:
            raise CheckpointError(f"{key}: {e}") from e
    path = Path(source).expanduser()
    if path.is_dir():
        raise CheckpointError(f"{key}: {source} is a folder; give a checkpoint file (e.g. {path}/checkpoints/"
                              "last.pt) or pretrained:NAME")
    if not path.is_file():
        raise CheckpointError(f"{key}: {source} not found (a checkpoint file, or pretrained:NAME)")
    return path


def read_init(source: str) -> InitSource:
    """Read ``train.init``: a checkpoint's EMA weights or a shipped model's, with its task, step and lineage."""
    path = resolve_source(source)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the file is unusable
        raise CheckpointError(f"train.init: {path} is not a readable moldiff checkpoint or shipped model "
                              f"({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or not isinstance(state.get("ema"), dict) or "task" not in state:
        raise CheckpointError(f"train.init: {path} holds no EMA weights (not a moldiff checkpoint or shipped model)")
    weights = {k: v.float() if v.is_floating_point() else v for k, v in state["ema"].items()}
    kind = "shipped model" if "optimizer" not in state else "checkpoint"
    return InitSource(weights, str(state["task"]), int(state.get("step", 0)), Lineage.from_dict(state.get("lineage")),
                      f"{kind} {source} (step {int(state.get('step', 0))}, EMA weights)")


def load_init(model: nn.Module, source: InitSource, task: str) -> InitSource:
    """Put ``source``'s weights into ``model`` (in place); :class:`CheckpointError` for another task, a key the
    model lacks or a shape that differs.  Returns ``source`` with :attr:`InitSource.fresh` filled."""
    if source.task != task:
        raise CheckpointError(f"train.init: {source.description} is a {source.task!r} model; this run trains "
                              f"{task!r}")
    own = model.state_dict()
    extra = sorted(set(source.weights) - set(own))
    if extra:
        raise CheckpointError(f"train.init: {source.description} has weights this network lacks: "
                              f"{', '.join(extra[:5])}{', ...' if len(extra) > 5 else ''} (another architecture?)")
    bad = [f"{k}: source {tuple(v.shape)}, this network {tuple(own[k].shape)}"
           for k, v in source.weights.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise CheckpointError(f"train.init: {source.description} does not fit this network's shapes: "
                              f"{'; '.join(bad[:4])}{'; ...' if len(bad) > 4 else ''} (check model.*)")
    model.load_state_dict(source.weights, strict=False)
    source.fresh = sorted(set(own) - set(source.weights))
    return source
