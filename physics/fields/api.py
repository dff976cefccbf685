"""The assimilation function of the Python API (and of the ``moldiff assimilate`` command): posterior trajectories
from a trajectory prior given observations."""

from __future__ import annotations

from pathlib import Path

import torch

from moldiff.api import load_model
from moldiff.config import ConfigError
from moldiff.errors import NonFiniteError
from moldiff.fileio import check_output_path, write_output
from moldiff.fileio import write_npz_cache

__all__ = ["assimilate", "read_observations", "ObservationFileError"]

METHODS = ("sda", "mmps", "dps")


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
    out = check_output_path(out, (".npz", ".npy"), "posterior samples")
    if not isinstance(observations, torch.Tensor):
        observations, length = read_observations(observations, length)
    task, model = load_model(checkpoint, overrides=overrides, use_ema=use_ema, device=device, pretrained=pretrained,
                             progress=progress)
    if not callable(getattr(task, "assimilate", None)):
        raise ConfigError(f"task {task.name!r} does not assimilate observations (a trajectory prior does)")
    if method is None:
        method = next((m for m in getattr(getattr(task.cfg, "eval", None), "methods", []) if m in METHODS),
                      "sda")
    if length is None:
        length = getattr(getattr(task.cfg, "eval", None), "length", None)
        fits = _lengths_for(task, observations.shape[-1])
        if length is None or (fits and length not in fits):
            span = f"{fits[0]}" if len(fits) == 1 else f"{fits[0]} to {fits[-1]}"
            hint = f" ({observations.shape[-1]} observations per trajectory fit {span} states)" if fits else ""
            default = "" if length is None else f"; the model's default, eval.length {length}, does not fit them"
            raise ValueError(f"give the trajectory length: --length N, or a 'length' array in the observations "
                             f"file{hint}{default}")
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


        arr = samples.cpu().numpy()
        if out.suffix.lower() == ".npz":
            out.parent.mkdir(parents=True, exist_ok=True)
            write_npz_cache(out, {"samples": arr, "y": observations.cpu().numpy()},
                            {"method": method, "n": n, "length": length, "checkpoint": str(checkpoint or pretrained)})
        else:
            write_output(out, lambda tmp: np.save(tmp, arr))
    return samples


class ObservationFileError(ValueError):
    """An observations file that cannot be used (the CLI reports it and exits 2)."""


def _lengths_for(task, num_observations: int, longest: int = 4096) -> list[int]:
    """Trajectory lengths whose observation by the task's operator gives ``num_observations`` values."""
    op = getattr(task, "operator", None)
    if op is None:
        return []
    return [n for n in range(1, longest + 1) if op.num_observations(n) == num_observations]


def read_observations(path: str | Path, length: int | None) -> tuple[torch.Tensor, int | None]:
    """``(y [B, P] float64, length)`` from an observations file: ``.npz`` with a numeric array ``y`` (one
    trajectory's ``[P]`` allowed) and optionally a positive integer ``length``; :class:`ObservationFileError` for
    anything else (never another exception for a bad file; a missing one is ``FileNotFoundError``)."""
    import zipfile

    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"observations file not found: {path}")
    if path.suffix.lower() != ".npz":
        raise ObservationFileError(f"{path}: observations are read from an .npz file with an array 'y' [B, P]")
    if not zipfile.is_zipfile(path):
        raise ObservationFileError(f"{path}: not an .npz archive (numpy.savez writes one, with an array 'y' [B, P])")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files} if hasattr(z, "files") else None
    except Exception as e:  # noqa: BLE001 -- numpy and zipfile raise many types for a corrupt archive
        raise ObservationFileError(f"{path}: not a readable .npz file ({e})") from e
    if arrays is None or "y" not in arrays:
        raise ObservationFileError(f"{path}: no array 'y' (observations [B, P]) in the file; it has {sorted(arrays or [])}")
    if arrays["y"].dtype.kind not in "biuf":
        raise ObservationFileError(f"{path}: observations 'y' must be numbers, got dtype {arrays['y'].dtype}")
    y = arrays["y"].astype(np.float64)
    file_length = None
    if "length" in arrays:
        raw = arrays["length"]
        if raw.ndim != 0 or raw.dtype.kind not in "iu" or int(raw) < 1:
            raise ObservationFileError(f"{path}: 'length' must be one positive integer (states per trajectory), got "
                             f"{raw.dtype} array of shape {raw.shape}")
        file_length = int(raw)
    if y.ndim == 1:
        y = y[None]
    if y.ndim != 2:
        raise ObservationFileError(f"{path}: observations must be [B, P], got shape {y.shape}")
    if y.shape[0] == 0 or y.shape[1] == 0:
        raise ObservationFileError(f"{path}: observations hold no trajectories or no values (shape {y.shape})")
    if not np.isfinite(y).all():
        raise ObservationFileError(f"{path}: observations contain NaN or inf")
    return torch.from_numpy(y), length if length is not None else file_length


