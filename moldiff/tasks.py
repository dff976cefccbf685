"""Tasks: what one domain (2D toys, molecules, particles, fields) plugs into the trainer and the CLI.

A task owns its data, model, loss, sampling and evaluation; the trainer and CLI talk only to this
interface.  Tasks are found by name from, in order: :func:`register_task` calls, the ``moldiff.tasks``
entry-point group (how ``physics`` and third-party packages plug in without ``moldiff`` importing
them), or a ``"package.module:Class"`` path in the config's ``task`` key.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Iterator

import torch
from torch import Tensor, nn

from .config import ConfigError, ExperimentConfig

__all__ = ["Task", "EvalResult", "register_task", "get_task", "available_tasks"]


@dataclass
class EvalResult:
    """Metrics (floats, logged by step), figures (matplotlib, logged as PNG) and extra files."""

    metrics: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


class Task:
    """Interface of a task.  Subclasses set ``name`` and ``config_class`` and implement the methods."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[ExperimentConfig]] = ExperimentConfig
    #: whether the task may show progress bars for work it does on its own (building a data cache on first use);
    #: the API sets it from its ``progress`` argument (``--no-progress``)
    progress: bool = True

    def __init__(self, cfg: ExperimentConfig):
        self.cfg = cfg

    def build_model(self) -> nn.Module:
        """A fresh network (parameters drawn from the global RNG, which the trainer seeds)."""
        raise NotImplementedError

    def train_batches(self, *, start_step: int, rank: int, world_size: int, device: torch.device) -> Iterator[Any]:
        """Training batches for steps ``start_step, start_step + 1, ...``; must be a pure function of
        ``(cfg.seed, step, rank)`` so that a resumed run sees the same batches."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> Tensor:
        """Per-sample loss ``[B]`` (the trainer averages)."""
        raise NotImplementedError

    def sample(self, model: nn.Module, n: int, *, generator: torch.Generator, sampler=None, progress: bool = True) -> Any:
        """``n`` samples from the model with the config's (or the given) sampler."""
        raise NotImplementedError

    def complete(self, model: nn.Module, given: Any, n: int, *, generator: torch.Generator, sampler=None,
                 progress: bool = True, **options) -> Any:
        """``n`` samples that contain ``given`` (inpainting: the task says what a given part is); tasks without it
        raise :class:`NotImplementedError`."""
        raise NotImplementedError(f"task {self.name!r} does not complete a given part")

    def evaluate(self, model: nn.Module, *, generator: torch.Generator, progress: bool = True) -> EvalResult:
        raise NotImplementedError

    def sampling_state(self) -> dict[str, Any]:
        """What sampling needs beyond the weights and the config, as plain values (e.g. a size histogram fitted on
        the training data); saved in checkpoints and shipped files so that sampling never reads the dataset."""
        return {}

    def load_sampling_state(self, state: dict[str, Any]) -> None:
        """Take a :meth:`sampling_state` back (from a checkpoint or shipped file; ``{}`` from older files)."""

    #: the methods :meth:`relax_samples` knows (the first is the default); empty for a task without relaxation
    relax_methods: ClassVar[tuple[str, ...]] = ()

    def relax_samples(self, samples: Any, *, method: str = "", max_iters: int = 200,
                      progress: bool = True) -> tuple[Any, str]:
        """Samples moved to a nearby minimum of a classical energy (``method``: the task's own names, "" for its
        default), and a one-line report; tasks without one raise :class:`NotImplementedError`."""
        raise NotImplementedError

    #: file suffixes :meth:`save_samples` can write
    sample_formats: ClassVar[tuple[str, ...]] = ()

    def save_samples(self, samples: Any, path: Path) -> None:
        raise NotImplementedError


_REGISTRY: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task available by its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name`")
    _REGISTRY[cls.name] = cls
    return cls


def _entry_point_tasks() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group="moldiff.tasks")}


def available_tasks() -> list[str]:
    return sorted(set(_REGISTRY) | set(_entry_point_tasks()))


def get_task(name: str) -> type[Task]:
    """The task class for ``name`` (registry, entry point, or ``module:Class``)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    eps = _entry_point_tasks()
    if name in eps:
        cls = eps[name].load()
    elif ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"task: cannot import {name!r}: {e}") from e
    else:
        raise ConfigError(f"task: unknown task {name!r}; available: {', '.join(available_tasks()) or 'none'}")
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ConfigError(f"task: {name!r} is not a moldiff Task subclass")
    _REGISTRY[name] = cls
    return cls
