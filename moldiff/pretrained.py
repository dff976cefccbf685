"""Models that ship inside the package: ``moldiff.pretrained("qm9")`` / ``moldiff sample --pretrained qm9``.

A shipped model is one file in ``moldiff/weights/``: the EMA weights in fp16, the config that built them and
the training step, written by :func:`export_pretrained` from a training checkpoint.  It loads offline with
``torch.load(weights_only=True)`` and strict keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .tasks import Task, get_task

__all__ = ["PRETRAINED", "Pretrained", "pretrained", "pretrained_path", "export_pretrained", "load_pretrained_file"]

WEIGHTS = Path(__file__).resolve().parent / "weights"
FORMAT = "moldiff-pretrained-1"

#: name -> (file in moldiff/weights, what it is)
PRETRAINED: dict[str, tuple[str, str]] = {
    "qm9": ("qm9_flow.pt", "QM9 molecules with bonds and charges: flow matching, MolGraphNet 6 x 128 (configs/qm9_flow_cpu.yaml)"),
    "lorenz63": ("lorenz63_prior.pt", "Lorenz-63 trajectory prior for assimilation: local score over 9 states of 0.05 "
                 "MTU (MLP 256 x 4); SDA with the dynamics as a weak constraint (configs/lorenz63_sda.yaml)"),
    "lorenz96": ("lorenz96_prior.pt", "Lorenz-96 (40 variables, F = 8) trajectory prior for assimilation: local score "
                 "over 5 states of 0.05 MTU (MLP 256 x 4); SDA with the dynamics as a weak constraint "
                 "(configs/lorenz96_sda.yaml)"),
}


def pretrained_path(name: str) -> Path:
    """The file of a shipped model; ``ValueError`` naming the available ones for an unknown name."""
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained model {name!r}; available: {', '.join(sorted(PRETRAINED))}")
    path = WEIGHTS / PRETRAINED[name][0]
    if not path.is_file():
        raise FileNotFoundError(f"pretrained model {name!r}: {path} is missing from this installation")
    return path


def export_pretrained(checkpoint: str | Path, out: str | Path, *, overrides: list[str] | None = None,
                      figures: dict[str, Any] | None = None) -> Path:
    """Write a training checkpoint's EMA weights (fp16), config (with ``--set``-style ``overrides``, e.g. sampling
    settings; validated) and step as a shipped model file."""
    from .config import load_config, to_dict
    from .training.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(checkpoint)
    cfg = load_config(state["config"], overrides)
    ema = {k: (v.half() if v.is_floating_point() else v) for k, v in state["ema"].items()}
    sampling = state.get("sampling")
    if sampling is None:  # a checkpoint written before sampling states: fit it now (reads the dataset once)
        sampling = get_task(cfg.task)(cfg).sampling_state()
    return save_checkpoint({"format": FORMAT, "task": state["task"], "config": to_dict(cfg), "ema": ema,
                            "step": int(state["step"]), "figures": figures or {}, "sampling": sampling,
                            "lineage": state.get("lineage", {})}, out)


def load_pretrained_file(path: str | Path, device: str = "auto",
                         overrides: list[str] | None = None) -> tuple[Task, nn.Module, dict]:
    """``(task, model, state)`` from a shipped model file (strict keys, weights in float32).  ``overrides``
    (``--set``-style) may change the sampling-time keys of the config (its class's ``resume_mutable``: sampler,
    eval, a trajectory prior's observation operator, ...), never what the weights mean."""
    from .config import load_config
    from .training.checkpoint import CheckpointError
    from .training.distributed import resolve_device
    from .training.resume import resume_changes

    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: not a readable moldiff pretrained model ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a moldiff pretrained model file (format {FORMAT})")
    cfg = load_config(state["config"], overrides)
    if overrides:
        resume_changes(state["config"], cfg)  # ConfigError naming any key that would change the model
    task = get_task(cfg.task)(cfg)
    try:
        task.load_sampling_state(state.get("sampling", {}))
    except (KeyError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: its sampling state does not fit this moldiff ({e})") from e
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten: leave the global RNG alone
        model = task.build_model()
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state["ema"].items()}, strict=True)
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


    def complete(self, scaffold, n: int, *, steps: int | None = None, sizes=None, resample: int = 1, noise: float = 0.0,
                 seed: int = 0, progress: bool = False) -> list:
        """``n`` molecules that contain ``scaffold`` (a :class:`~moldiff.molecules.graph_mol.GraphMolecule`, a
        PyG ``Data`` with ``z``, ``pos`` and bonds, or an RDKit ``Mol`` with a conformer): its atoms, charges, bonds and geometry are kept, the rest is generated
        by inpainting (``qm9`` only; ``sizes``: the molecules' atom counts, default drawn from the training
        histogram above the scaffold's size; ``resample``, ``noise``: see
        :meth:`~moldiff.molecules.flow_task.QM9FlowTask.sample`)."""
        import dataclasses

        from .molecules.graph_mol import GraphMolecule, from_rdkit

        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if hasattr(scaffold, "pos") and hasattr(scaffold, "z"):  # a PyG Data
            scaffold = GraphMolecule.from_pyg(scaffold)
        elif not isinstance(scaffold, GraphMolecule):
            scaffold = from_rdkit(scaffold)
        scfg = self.task.cfg.sampler if steps is None else dataclasses.replace(self.task.cfg.sampler, steps=steps)
        gen = torch.Generator(device=next(self.model.parameters()).device).manual_seed(seed)
        return self.task.sample(self.model, n, generator=gen, sampler=scfg, progress=progress, scaffold=scaffold,
                                sizes=sizes, resample=resample, noise=noise)


def pretrained(name: str = "qm9", *, device: str = "auto") -> Pretrained:
    """Load a model that ships with moldiff (offline): ``moldiff.pretrained("qm9").sample(100)``."""
    task, model, state = load_pretrained_file(pretrained_path(name), device)
    return Pretrained(name, task, model, int(state.get("step", 0)), dict(state.get("figures", {})))
