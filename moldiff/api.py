"""The Python API behind the generic CLI commands: ``train``, ``sample``, ``evaluate``, ``load_model``.  Domain
functions live with their domain (:mod:`moldiff.molecules.api`, ``physics.fields.api``)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import ConfigError, ExperimentConfig, SamplerConfig, as_config_error
from .loading import load_config
from .tasks import EvalResult, Task, get_task
from .errors import check_finite
from .fileio import check_output_path, write_output
from .training.checkpoint import CheckpointError, ShippedModelFile, load_checkpoint
from .training.distributed import resolve_device
from .training.trainer import TrainResult
from .training.trainer import train as _train
from .pretrained import load_pretrained_file, pretrained_path
from .pretrained import load_pretrained_file
from .diffusion.registry import check_sampler_options, get_sampler, sampler_names

__all__ = ["train", "load_model", "sample", "evaluate", "load_config"]


def train(
    config: ExperimentConfig | str | Path,
    overrides: list[str] | None = None,
    *,
    resume: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train from a config object or a YAML path (with ``--set``-style overrides); ``resume`` and ``overwrite``
    as in :func:`moldiff.training.train`."""
    if not isinstance(config, ExperimentConfig):
        config = load_config(config, overrides)
    elif overrides:
        raise ValueError("overrides apply to YAML paths; edit the config object directly instead")
    return _train(config, resume=resume, overwrite=overwrite, progress=progress)


def load_model(
    checkpoint: str | Path | None = None,
    *,
    overrides: list[str] | None = None,
    use_ema: bool = True,
    device: str = "auto",
    pretrained: str | None = None,
    progress: bool = True,
) -> tuple[Task, nn.Module]:
    """Rebuild a checkpoint's task (its saved config, plus overrides) and model (EMA weights by default), or
    a shipped model's (``pretrained="qm9"``; see :mod:`moldiff.pretrained`).  ``progress``: whether the task may
    show progress bars for data it builds on first use."""
    if (checkpoint is None) == (pretrained is None):
        raise ValueError("give either a checkpoint or a pretrained model name, not both or neither")
    if pretrained is not None:
        task, model, _ = load_pretrained_file(pretrained_path(pretrained), device, overrides)
        task.progress = progress
        return task, model
    try:
        state = load_checkpoint(checkpoint)
    except ShippedModelFile:  # a shipped model's file given by path: load it as such

        task, model, _ = load_pretrained_file(checkpoint, device, overrides)
        task.progress = progress
        return task, model
    cfg = load_config(state["config"], overrides, stored=True)
    task = get_task(cfg.task)(cfg)
    task.progress = progress
    try:
        task.load_sampling_state(state.get("sampling", {}))
    except (KeyError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{checkpoint}: its sampling state does not fit this moldiff ({e})") from e
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten: leave the global RNG alone
        model = task.build_model()
    weights = state["ema" if use_ema else "model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        given = f" with --set {' '.join(overrides)}" if overrides else ""
        raise CheckpointError(f"{checkpoint}: its weights do not fit the model built from its config{given} "
                              f"({str(e).splitlines()[-1].strip()})") from e
    bad = [k for k, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"{checkpoint}: non-finite {'EMA ' if use_ema else ''}weights ({', '.join(bad[:3])}"
                              f"{', ...' if len(bad) > 3 else ''}); the run diverged before this checkpoint")
    model.to(resolve_device(device)).eval()
    return task, model


def sample(
    checkpoint: str | Path | None,
    n: int,
    *,
    out: str | Path | None = None,
    sampler: str | SamplerConfig | None = None,
    steps: int | None = None,
    seed: int = 0,
    overrides: list[str] | None = None,
    use_ema: bool = True,
    device: str = "auto",
    progress: bool = True,
    pretrained: str | None = None,
    relax: str | None = None,
    relax_iters: int = 200,
) -> Any:
    """Draw ``n`` samples from a checkpoint (or a shipped model, ``pretrained="qm9"``); write them to ``out``
    (format by suffix) if given.  QM9 graph models return
    :class:`~moldiff.molecules.graph_mol.GraphMolecule` s (``.to_rdkit()`` for RDKit molecules).  ``relax``
    (``""`` for the task's default method, or a method name: ``mmff``/``uff`` for molecules) moves the samples to a
    nearby minimum of the task's classical energy, at most ``relax_iters`` iterations, before they are written."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    check_output_path(out, (), "samples")
    if relax_iters < 1:
        raise ValueError(f"relax_iters must be >= 1, got {relax_iters}")
    task, model = load_model(checkpoint, overrides=overrides, use_ema=use_ema, device=device, pretrained=pretrained,
                             progress=progress)
    out = check_output_path(out, task.sample_formats, f"{task.name} samples")
    if relax is not None and not task.relax_methods:
        raise ValueError(f"--relax: task {task.name!r} has no relaxation")
    if relax and relax not in task.relax_methods:
        raise ValueError(f"--relax {relax}: unknown method; {task.name} knows {', '.join(task.relax_methods)}")
    scfg = task.cfg.sampler
    if isinstance(sampler, SamplerConfig):
        scfg = sampler
    elif sampler is not None and sampler != scfg.name:
        if sampler not in sampler_names(standalone=True):
            raise ConfigError(f"sampler: unknown sampler {sampler!r}; choose one of {sampler_names(standalone=True)}")
        own = get_sampler(sampler).options()  # the config's options that the newly named sampler also takes
        scfg = dataclasses.replace(scfg, name=sampler, options={k: v for k, v in scfg.options.items() if k in own})
    if steps is not None:
        scfg = dataclasses.replace(scfg, steps=steps)

    if scfg.name not in sampler_names(standalone=True):
        raise ConfigError(f"sampler: unknown sampler {scfg.name!r}; choose one of {sampler_names(standalone=True)}")
    scfg = dataclasses.replace(scfg, options=as_config_error(check_sampler_options, scfg.name, scfg.options))
    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    samples = task.sample(model, n, generator=gen, sampler=scfg, progress=progress)
    check_finite(samples, "the samples")
    if relax is not None:
        samples, report = task.relax_samples(samples, method=relax, max_iters=relax_iters, progress=progress)
        if progress:
            print(f"moldiff: {report}", file=sys.stderr)
    if out is not None:
        write_output(out, lambda tmp: task.save_samples(samples, tmp))
    return samples


def evaluate(
    checkpoint: str | Path | None = None,
    *,
    overrides: list[str] | None = None,
    use_ema: bool = True,
    device: str = "auto",
    seed: int | None = None,
    progress: bool = True,
    pretrained: str | None = None,
) -> EvalResult:
    """Run the task's evaluation on a checkpoint's model (or a shipped model's, ``pretrained="qm9"``)."""
    task, model = load_model(checkpoint, overrides=overrides, use_ema=use_ema, device=device, pretrained=pretrained,
                             progress=progress)
    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(task.cfg.seed + 2**31 if seed is None else seed)
    with torch.no_grad():
        return task.evaluate(model, generator=gen, progress=progress)
