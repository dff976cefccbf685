"""Lineage: what went into a network's weights, across runs that warm-start from one another.

A model trained in many chunks (``--resume auto``) and across runs (``train.init`` from an earlier checkpoint or a
shipped model) carries one record: cumulative training CPU-hours (process CPU time of the training loop, every
thread, evaluation excluded) and GPU-minutes (wall time on CUDA devices times their number), samples seen, and
one *segment* per training invocation with the recipe it ran.  Recipes are stored once each, keyed by a hash of
the config without the keys that only say how long or where to run.  Plain values only, so the record travels
in checkpoints and shipped files loaded with ``weights_only=True``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Lineage", "Segment", "recipe_key"]

#: config keys that say how long, where or how loudly to train -- not what was trained (left out of a recipe)
_NOT_RECIPE = ("name", "runs_root", "tracking", "eval", "sampler", "data.cache_dir", "train.steps",
               "train.max_minutes", "train.max_cpu_minutes", "train.log_every", "train.ckpt_every",
               "train.keep_checkpoints", "train.eval_every", "train.device", "train.init", "train.threads")


def _recipe(config: dict) -> dict:
    out = copy.deepcopy(config)
    for key in _NOT_RECIPE:
        node, parts = out, key.split(".")
        for p in parts[:-1]:
            node = node.get(p) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    return out


def recipe_key(config: dict) -> str:
    """A short stable hash of a config's recipe (the config less :data:`_NOT_RECIPE`)."""
    text = json.dumps(_recipe(config), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass
class Segment:
    """One training invocation: steps ``[start_step, end_step)`` of one run under one recipe."""

    recipe: str  #: key into :attr:`Lineage.recipes`
    run: str  #: the run folder's name
    start_step: int
    end_step: int
    cpu_hours: float = 0.0
    gpu_minutes: float = 0.0
    samples: int = 0
    device: str = "cpu"
    init: str = ""  #: where the weights came from at this segment's start, when not from the run's own checkpoint
    note: str = ""  #: e.g. how a segment recorded after the fact was measured


@dataclass
class Lineage:
    cpu_hours: float = 0.0
    gpu_minutes: float = 0.0
    samples_seen: int = 0
    steps: int = 0  #: optimiser steps over the whole lineage
    segments: list[Segment] = field(default_factory=list)
    recipes: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict | None) -> "Lineage":
        if not d:
            return cls()
        segs = [Segment(**s) for s in d.get("segments", [])]
        return cls(float(d.get("cpu_hours", 0.0)), float(d.get("gpu_minutes", 0.0)), int(d.get("samples_seen", 0)),
                   int(d.get("steps", 0)), segs, {k: dict(v) for k, v in d.get("recipes", {}).items()})

    def to_dict(self) -> dict[str, Any]:
        return {"cpu_hours": self.cpu_hours, "gpu_minutes": self.gpu_minutes, "samples_seen": self.samples_seen,
                "steps": self.steps, "segments": [asdict(s) for s in self.segments],
                "recipes": copy.deepcopy(self.recipes)}

    def with_segment(self, segment: Segment, config: dict) -> "Lineage":
        """A copy with ``segment`` (run under ``config``) added to the totals."""
        out = Lineage.from_dict(self.to_dict())
        segment.recipe = recipe_key(config)
        out.recipes.setdefault(segment.recipe, _recipe(config))
        out.segments.append(segment)
        out.cpu_hours += segment.cpu_hours
        out.gpu_minutes += segment.gpu_minutes
        out.samples_seen += segment.samples
        out.steps += segment.end_step - segment.start_step
        return out

    def summary(self) -> str:
        return (f"{self.cpu_hours:.2f} CPU-hours, {self.gpu_minutes:.1f} GPU-minutes, {self.steps:,} steps, "
                f"{self.samples_seen:,} samples, {len(self.segments)} segments, {len(self.recipes)} recipes")
