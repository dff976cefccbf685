"""Errors shared by every layer, and the finiteness check that guards what moldiff writes or returns."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

__all__ = ["NonFiniteError", "DataError", "check_finite"]


class DataError(RuntimeError):
    """A dataset is missing, or its cache cannot be read or built (the CLI reports it and exits 2)."""


class NonFiniteError(FloatingPointError):
    """A computation produced NaN or inf where a result was due (samples, a posterior, an ODE solve)."""


def _first_nonfinite(obj: Any, path: str, seen: set[int]) -> str | None:
    if id(obj) in seen:
        return None
    if isinstance(obj, torch.Tensor):
        return None if not obj.is_floating_point() or bool(torch.isfinite(obj).all()) else path
    if isinstance(obj, np.ndarray):
        return None if obj.dtype.kind not in "fc" or bool(np.isfinite(obj).all()) else path
    if isinstance(obj, float):
        return None if math.isfinite(obj) else path
    if isinstance(obj, (str, bytes, int, bool)) or obj is None:
        return None
    seen.add(id(obj))
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    elif dataclasses.is_dataclass(obj):
        items = ((f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj))
    else:
        return None
    for k, v in items:
        if (bad := _first_nonfinite(v, f"{path}[{k!r}]" if not dataclasses.is_dataclass(obj) else f"{path}.{k}", seen)):
            return bad
    return None


def check_finite(obj: Any, what: str) -> None:
    """Raise :class:`NonFiniteError` if any float tensor, array or number in ``obj`` (nested lists, tuples, dicts
    and dataclasses) holds NaN or inf; ``what`` names the result in the message."""
    bad = _first_nonfinite(obj, what, set())
    if bad is not None:
        raise NonFiniteError(f"{what} is not finite (NaN or inf at {bad})")
