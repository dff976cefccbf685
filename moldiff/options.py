"""Options passed through to a function or class (a sampler's ``**sampler_kwargs``, a backbone's own arguments),
checked in one place against the callee itself.

:func:`check_options` takes the callee's keyword arguments with defaults as its options: a name it does not take
is an error listing the ones it does; a value is typed by the default's type (so YAML's ``1e-4``, read as a string,
becomes a float); the values go through the callee's own ``check_options`` where it has one -- the same check it
runs when called, so that a config fails when it is read, not when the work starts, and the rule lives once.
"""

from __future__ import annotations

import inspect
import re
from functools import partial
from typing import Any, Callable

__all__ = ["option_defaults", "check_options", "convert_scalar"]

_NO_DEFAULT = inspect.Parameter.empty


def option_defaults(fn: Callable[..., Any], exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """``fn``'s options: its keyword arguments with a default, less ``exclude`` and any a ``partial`` binds."""
    bound = fn.keywords if isinstance(fn, partial) else {}
    sig = inspect.signature(fn)
    return {n: p.default for n, p in sig.parameters.items()
            if p.default is not _NO_DEFAULT and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
            and n not in exclude and n not in bound}


_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def convert_scalar(value: Any, tp: type, key: str) -> Any:
    """``value`` as a ``bool``, ``int``, ``float`` or ``str`` (``tp``), or ``ValueError`` naming ``key``; a float may
    come as a string, as YAML 1.1 reads ``1e-4`` (no dot).  Configs and options use this one conversion."""
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key}: expected a bool (true/false), got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key}: expected an int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key}: expected a float, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{key}: not a scalar type: {tp!r}")


def _coerce(value: Any, default: Any, key: str) -> Any:
    """``value`` typed like an option's ``default`` (a scalar's type, or a list); other defaults (``None``) take it
    as it is."""
    if isinstance(default, (bool, int, float, str)):
        return convert_scalar(value, type(default), key)
    if isinstance(default, (tuple, list)) and not isinstance(value, (tuple, list)):
        raise ValueError(f"{key}: expected a list, got {value!r}")
    return value


def check_options(fn: Callable[..., Any], options: dict[str, Any], prefix: str, *, exclude: tuple[str, ...] = (),
                  known: dict[str, Any] | None = None, check: Callable[..., None] | None = None,
                  owner: str = "") -> dict[str, Any]:
    """``options`` for ``fn`` checked and typed (module docstring); ``ValueError`` naming ``prefix.KEY``.  ``known``:
    the options and their defaults (default: :func:`option_defaults` of ``fn`` less ``exclude``).  ``check``
    (default: ``fn.check_options`` where it exists) is called with the options it names, defaults filled in."""
    known = option_defaults(fn, exclude) if known is None else known
    out = {}
    for k, v in options.items():
        if k not in known:
            have = ", ".join(sorted(known)) or "none"
            raise ValueError(f"{prefix}.{k}: {owner or getattr(fn, '__name__', 'this')} has no option {k!r} "
                             f"(its options: {have})")
        out[k] = _coerce(v, known[k], f"{prefix}.{k}")
    check = check if check is not None else getattr(fn, "check_options", None)
    if check is not None:
        names = [n for n in inspect.signature(check).parameters if n in known]
        try:
            check(**{n: out.get(n, known[n]) for n in names})
        except ValueError as e:
            raise ValueError(f"{prefix}: {e}") from None
    return out
