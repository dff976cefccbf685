"""Models that ship inside the package: ``moldiff.pretrained("qm9")`` / ``moldiff sample --pretrained qm9``.

A shipped model is one file that a plugin ships beside its code (the molecules' ``qm9`` in
``moldiff/molecules/weights/``, the Lorenz priors in ``physics/weights/``) and registers under its name in the
``moldiff.pretrained`` entry-point group (a :class:`ShippedModel`), so the core names none of them.  The file holds
the EMA weights in fp16, the config that built them, the training step, the lineage and what sampling needs
(:meth:`~moldiff.tasks.Task.sampling_state`), written by :func:`export_pretrained` from a training checkpoint.  It
loads offline with ``torch.load(weights_only=True)`` and strict keys.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .tasks import Task, get_task
from .config import to_dict
from .loading import load_config
from .training.checkpoint import load_checkpoint, save_checkpoint
from .training.checkpoint import CheckpointError
from .training.distributed import resolve_device
from .training.resume import resume_changes

__all__ = ["PRETRAINED", "ShippedModel", "Pretrained", "pretrained", "pretrained_path", "shipped_models",
           "register_pretrained", "export_pretrained", "load_pretrained_file", "build_stored_model"]

FORMAT = "moldiff-pretrained-1"


@dataclass(frozen=True)
class ShippedModel:
    """A model a plugin ships: its file and one line on what it is."""

    file: Path
    description: str


_REGISTERED: dict[str, ShippedModel] = {}


def register_pretrained(name: str, model: ShippedModel) -> None:
    """Make a shipped model available by name (plugins normally use the ``moldiff.pretrained`` entry points)."""
    _REGISTERED[name] = model


def shipped_models() -> dict[str, ShippedModel]:
    """Every shipped model by name: the ``moldiff.pretrained`` entry points of installed plugins, then
    :func:`register_pretrained` calls."""
    out = {}
    for ep in entry_points(group="moldiff.pretrained"):
        model = ep.load()
        if not isinstance(model, ShippedModel):
            raise TypeError(f"entry point moldiff.pretrained:{ep.name} is not a ShippedModel ({ep.value})")
        out[ep.name] = model
    return {**out, **_REGISTERED}


class _Registry(Mapping):
    """``PRETRAINED[name] -> (file, description)``, read from :func:`shipped_models` when used."""

    def __getitem__(self, name: str) -> tuple[Path, str]:
        m = shipped_models()[name]
        return m.file, m.description

    def __iter__(self) -> Iterator[str]:
        return iter(shipped_models())

    def __len__(self) -> int:
        return len(shipped_models())


#: name -> (file, what it is), for every shipped model
PRETRAINED: Mapping[str, tuple[Path, str]] = _Registry()


def pretrained_path(name: str) -> Path:
    """The file of a shipped model; ``ValueError`` naming the available ones for an unknown name."""
    models = shipped_models()
    if name not in models:
        raise ValueError(f"unknown pretrained model {name!r}; available: {', '.join(sorted(models)) or 'none'}")
    path = models[name].file
    if not path.is_file():
        raise FileNotFoundError(f"pretrained model {name!r}: {path} is missing from this installation")
    return path


def export_pretrained(checkpoint: str | Path, out: str | Path, *, overrides: list[str] | None = None,
                      figures: dict[str, Any] | None = None) -> Path:
    """Write a training checkpoint's EMA weights (fp16), config (with ``--set``-style ``overrides``, e.g. sampling
    settings; validated) and step as a shipped model file."""
    state = load_checkpoint(checkpoint)
    cfg = load_config(state["config"], overrides, stored=True)
    ema = {k: (v.half() if v.is_floating_point() else v) for k, v in state["ema"].items()}
    sampling = state.get("sampling")
    if sampling is None:  # a checkpoint written before sampling states: fit it now (reads the dataset once)
        sampling = get_task(cfg.task)(cfg).sampling_state()
    return save_checkpoint({"format": FORMAT, "task": state["task"], "config": to_dict(cfg), "ema": ema,
                            "step": int(state["step"]), "figures": figures or {}, "sampling": sampling,
                            "lineage": state.get("lineage", {})}, out)


def build_stored_model(config: dict, sampling: dict, weights: dict[str, torch.Tensor], *, source: str,
                       overrides: list[str] | None = None) -> tuple[Task, nn.Module]:
    """``(task, model)`` from what a file stores -- a config, the task's sampling state and weights (float32,
    strict keys) -- without reading any dataset.  ``overrides`` may change only sampling-time keys (a
    ``ConfigError`` names any other); a sampling state that does not fit is a :class:`CheckpointError` naming
    ``source``."""
    cfg = load_config(config, overrides, stored=True)
    if overrides:
        resume_changes(config, cfg)  # ConfigError naming any key that would change the model
    task = get_task(cfg.task)(cfg)
    try:
        task.load_sampling_state(sampling or {})
    except (KeyError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{source}: its sampling state does not fit this moldiff ({e})") from e
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten: leave the global RNG alone
        model = task.build_model()
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()}, strict=True)
    return task, model


def load_pretrained_file(path: str | Path, device: str = "auto",
                         overrides: list[str] | None = None) -> tuple[Task, nn.Module, dict]:
    """``(task, model, state)`` from a shipped model file (strict keys, weights in float32).  ``overrides``
    (``--set``-style) may change the sampling-time keys of the config (its class's ``resume_mutable``: sampler,
    eval, a trajectory prior's observation operator, ...), never what the weights mean."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: not a readable moldiff pretrained model ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a moldiff pretrained model file (format {FORMAT})")
    task, model = build_stored_model(state["config"], state.get("sampling", {}), state["ema"], source=str(path),
                                     overrides=overrides)
    return task, model.to(resolve_device(device)).eval(), state


@dataclass
class Pretrained:
    """A loaded shipped model: ``task``, ``model`` (EMA weights) and its ``step`` and ``figures``."""

    name: str
    task: Task
    model: nn.Module
    step: int
    figures: dict[str, Any]

    def sample(self, n: int, *, steps: int | None = None, seed: int = 0, progress: bool = False) -> list:
        """``n`` samples (for ``qm9``: :class:`~moldiff.molecules.graph_mol.GraphMolecule` s; ``.to_rdkit()``
        gives RDKit molecules) with ``steps`` network evaluations (default: the model's config)."""
        import dataclasses

        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        scfg = self.task.cfg.sampler if steps is None else dataclasses.replace(self.task.cfg.sampler, steps=steps)
        dev = next(self.model.parameters()).device
        gen = torch.Generator(device=dev).manual_seed(seed)
        return self.task.sample(self.model, n, generator=gen, sampler=scfg, progress=progress)


    def complete(self, given, n: int, *, steps: int | None = None, seed: int = 0, progress: bool = False,
                 **options) -> list:
        """``n`` samples that contain ``given`` (inpainting; the task's :meth:`~moldiff.tasks.Task.complete`): for
        ``qm9`` a scaffold -- a :class:`~moldiff.molecules.graph_mol.GraphMolecule`, a PyG ``Data`` with ``z``,
        ``pos`` and bonds, or an RDKit ``Mol`` with a conformer -- whose atoms, charges, bonds and geometry are kept
        (``options``: ``sizes``, ``resample``, ``noise``; see :meth:`~moldiff.molecules.flow_task.QM9FlowTask.
        complete`)."""
        import dataclasses

        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        scfg = self.task.cfg.sampler if steps is None else dataclasses.replace(self.task.cfg.sampler, steps=steps)
        gen = torch.Generator(device=next(self.model.parameters()).device).manual_seed(seed)
        return self.task.complete(self.model, given, n, generator=gen, sampler=scfg, progress=progress, **options)


def pretrained(name: str = "qm9", *, device: str = "auto") -> Pretrained:
    """Load a model that ships with moldiff (offline): ``moldiff.pretrained("qm9").sample(100)``."""
    task, model, state = load_pretrained_file(pretrained_path(name), device)
    return Pretrained(name, task, model, int(state.get("step", 0)), dict(state.get("figures", {})))
