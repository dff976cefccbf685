"""The Python API behind every CLI command: ``train``, ``sample``, ``evaluate``, ``load_model``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import ConfigError, ExperimentConfig, SamplerConfig, load_config
from .tasks import EvalResult, Task, get_task
from .errors import NonFiniteError, check_finite
from .training.checkpoint import CheckpointError, load_checkpoint
from .training.distributed import resolve_device
from .training.trainer import TrainResult
from .training.trainer import train as _train

__all__ = ["train", "load_model", "sample", "assimilate", "evaluate", "evaluate_molecule_file", "evaluate_graph_file", "evaluate_dataset", "load_config"]


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
) -> tuple[Task, nn.Module]:
    """Rebuild a checkpoint's task (its saved config, plus overrides) and model (EMA weights by default), or
    a shipped model's (``pretrained="qm9"``; see :mod:`moldiff.pretrained`)."""
    if (checkpoint is None) == (pretrained is None):
        raise ValueError("give either a checkpoint or a pretrained model name, not both or neither")
    if pretrained is not None:
        from .pretrained import load_pretrained_file, pretrained_path

        task, model, _ = load_pretrained_file(pretrained_path(pretrained), device, overrides)
        return task, model
    state = load_checkpoint(checkpoint)
    cfg = load_config(state["config"], overrides)
    task = get_task(cfg.task)(cfg)
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


def _check_output_path(out: str | Path | None, suffixes: tuple[str, ...], what: str) -> Path | None:
    """Reject an output path that is a folder or has an unsupported suffix, before any work is done."""
    if out is None:
        return None
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"{out}: is a folder; give a file name for the {what}")
    if suffixes and out.suffix.lower() not in suffixes:
        raise ValueError(f"{out}: {what} are written as {', '.join(suffixes)}")
    return out


def _write_output(out: Path, write) -> None:
    """``write(tmp)`` to a temporary file beside ``out`` (same suffix, lower case), then rename it onto ``out``:
    a failure leaves nothing behind."""
    from .fileio import atomic_path

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, suffix=out.suffix.lower()) as tmp:  # np.save appends .npy to a .NPY name
        write(tmp)


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
) -> Any:
    """Draw ``n`` samples from a checkpoint (or a shipped model, ``pretrained="qm9"``); write them to ``out``
    (format by suffix) if given.  QM9 graph models return
    :class:`~moldiff.molecules.graph_mol.GraphMolecule` s (``.to_rdkit()`` for RDKit molecules)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _check_output_path(out, (), "samples")
    task, model = load_model(checkpoint, overrides=overrides, use_ema=use_ema, device=device, pretrained=pretrained)
    out = _check_output_path(out, task.sample_formats, f"{task.name} samples")
    scfg = task.cfg.sampler
    if isinstance(sampler, SamplerConfig):
        scfg = sampler
    elif sampler is not None:
        scfg = dataclasses.replace(scfg, name=sampler)
    if steps is not None:
        scfg = dataclasses.replace(scfg, steps=steps)
    from .diffusion.samplers import SAMPLERS

    if scfg.name not in SAMPLERS:
        raise ConfigError(f"sampler: unknown sampler {scfg.name!r}; choose one of {sorted(SAMPLERS)}")
    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    samples = task.sample(model, n, generator=gen, sampler=scfg, progress=progress)
    check_finite(samples, "the samples")
    if out is not None:
        _write_output(out, lambda tmp: task.save_samples(samples, tmp))
    return samples


def assimilate(
    checkpoint: str | Path | None,
    observations: str | Path | torch.Tensor,
    *,
    n: int,
    length: int | None = None,
    method: str | None = None,
    out: str | Path | None = None,
    seed: int = 0,
    overrides: list[str] | None = None,
    use_ema: bool = True,
    device: str = "auto",
    progress: bool = True,
    pretrained: str | None = None,
) -> torch.Tensor:
    """Posterior samples given observations, from a checkpoint whose task conditions on them (``trajectory``), or
    from a shipped prior (``pretrained="lorenz63"`` / ``"lorenz96"``).

    Args:
        observations: ``y [B, P]`` (a tensor), or an ``.npz`` file with ``y`` (and optionally ``length``).  The
            observation operator and noise are the checkpoint config's ``observation`` section (plus overrides).
        n: posterior samples per observed trajectory.
        length: states per trajectory (default: the file's ``length``, else the config's ``eval.length``).
        method: sda | mmps | dps (default: the first of these in the config's ``eval.methods``).
        out: write the samples ``[B, n, length, ...]`` here (``.npz`` key ``samples``, or ``.npy``).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out = _check_output_path(out, (".npz", ".npy"), "posterior samples")
    if not isinstance(observations, torch.Tensor):
        observations, length = _read_observations(observations, length)
    task, model = load_model(checkpoint, overrides=overrides, use_ema=use_ema, device=device, pretrained=pretrained)
    if method is None:
        method = next((m for m in getattr(getattr(task.cfg, "eval", None), "methods", []) if m in ("sda", "mmps", "dps")),
                      "sda")
    if length is None:
        length = getattr(getattr(task.cfg, "eval", None), "length", None)
        if length is None:
            raise ValueError("give the trajectory length")
    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    samples = task.assimilate(model, observations.float(), n=n, length=length, method=method, generator=gen,
                              progress=progress)
    if not bool(torch.isfinite(samples).all()):
        raise NonFiniteError(
            f"the posterior is not finite (method {method}; observations range over "
            f"[{float(observations.min()):.3g}, {float(observations.max()):.3g}] in the data's units): the "
            "observations may be far outside what the prior was trained on, or the guidance too strong"
        )
    if out is not None:
        import numpy as np

        from .fileio import write_npz_cache

        arr = samples.cpu().numpy()
        if out.suffix.lower() == ".npz":
            out.parent.mkdir(parents=True, exist_ok=True)
            write_npz_cache(out, {"samples": arr, "y": observations.cpu().numpy()},
                            {"method": method, "n": n, "length": length, "checkpoint": str(checkpoint or pretrained)})
        else:
            _write_output(out, lambda tmp: np.save(tmp, arr))
    return samples


def _read_observations(path: str | Path, length: int | None) -> tuple[torch.Tensor, int | None]:
    import zipfile

    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"observations file not found: {path}")
    if path.suffix.lower() != ".npz":
        raise ValueError(f"{path}: observations are read from an .npz file with an array 'y' [B, P]")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files} if hasattr(z, "files") else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e})") from e
    if arrays is None or "y" not in arrays:
        raise ValueError(f"{path}: no array 'y' (observations [B, P]) in the file; it has {sorted(arrays or [])}")
    if arrays["y"].dtype.kind not in "biuf":
        raise ValueError(f"{path}: observations 'y' must be numbers, got dtype {arrays['y'].dtype}")
    y = arrays["y"].astype(np.float64)
    file_length = None
    if "length" in arrays:
        raw = arrays["length"]
        if raw.ndim != 0 or raw.dtype.kind not in "iu" or int(raw) < 1:
            raise ValueError(f"{path}: 'length' must be one positive integer (states per trajectory), got "
                             f"{raw.dtype} array of shape {raw.shape}")
        file_length = int(raw)
    if y.ndim == 1:
        y = y[None]
    if y.ndim != 2:
        raise ValueError(f"{path}: observations must be [B, P], got shape {y.shape}")
    if y.shape[0] == 0 or y.shape[1] == 0:
        raise ValueError(f"{path}: observations hold no trajectories or no values (shape {y.shape})")
    if not np.isfinite(y).all():
        raise ValueError(f"{path}: observations contain NaN or inf")
    return torch.from_numpy(y), length if length is not None else file_length


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
    task, model = load_model(checkpoint, overrides=overrides, use_ema=use_ema, device=device, pretrained=pretrained)
    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(task.cfg.seed + 2**31 if seed is None else seed)
    with torch.no_grad():
        return task.evaluate(model, generator=gen, progress=progress)


def evaluate_graph_file(
    path: str | Path, *, novelty: bool = True, reference: int = 2000, mmff: int = 200,
    cache_dir: str | Path | None = None, progress: bool = True,
):
    """Score the molecules of an SDF file *with their own bonds and charges* (the generated-graph protocol,
    :mod:`moldiff.molecules.graph_metrics`) and with EDM's distance rule; distribution distances against
    ``reference`` molecules of QM9's test split, novelty against its training graphs.  Elements outside QM9's
    (H, C, N, O, F) and formal charges outside -1..1 are an error naming them; chemically invalid graphs are
    scored as invalid."""
    from .config import load_config as _load
    from .molecules.flow_task import QM9FlowTask, check_vocabulary
    from .molecules.graph_metrics import evaluate_graphs
    from .molecules.graph_mol import read_graph_sdf

    if Path(path).suffix.lower() != ".sdf":
        raise ValueError(f"{path}: the generated-graph protocol reads bonds and charges from an .sdf file")
    mols = read_graph_sdf(path)
    check_vocabulary(mols, where=str(path))
    cfg = _load({"task": "qm9_flow", "data": {"cache_dir": None if cache_dir is None else str(cache_dir)},
                 "eval": {"reference": reference}})
    task = QM9FlowTask(cfg)
    return evaluate_graphs(mols, reference=task.reference(), training_smiles=task.training_smiles() if novelty else None,
                           mmff=mmff, progress=progress)


def _qm9_reference(novelty: bool, cache_dir, progress: bool) -> set[str] | None:
    if not novelty:
        return None
    from .molecules.qm9 import QM9

    return QM9.load(cache_dir, progress=progress).pipeline_smiles("train", progress=progress)


def evaluate_molecule_file(
    path: str | Path, *, novelty: bool = True, cache_dir: str | Path | None = None, progress: bool = True
):
    """Score the molecules of an SDF / xyz / extxyz file with the EDM protocol
    (:class:`~moldiff.molecules.evaluate.MoleculeMetrics`); novelty is against QM9's training split."""
    from .molecules.evaluate import evaluate_molecules
    from .molecules.io import read_molecules

    mols = read_molecules(path)
    return evaluate_molecules(mols, reference_smiles=_qm9_reference(novelty, cache_dir, progress), progress=progress)


def evaluate_dataset(
    name: str = "qm9",
    split: str = "train",
    *,
    limit: int | None = None,
    novelty: bool = True,
    cache_dir: str | Path | None = None,
    progress: bool = True,
):
    """Score a dataset split itself (EDM's "data" row): ``limit`` takes its first molecules only."""
    from .molecules.evaluate import evaluate_molecules
    from .molecules.qm9 import QM9

    if name != "qm9":
        raise ValueError(f"unknown dataset {name!r}; available: qm9")
    qm9 = QM9.load(cache_dir, progress=progress)
    rows = qm9.split(split)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        rows = rows[:limit]
    ref = _qm9_reference(novelty, cache_dir, progress)
    return evaluate_molecules(qm9.molecules(rows), reference_smiles=ref, progress=progress)
