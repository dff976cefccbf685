"""ODE integrators for ``dx/dt = v(x, t)``: Euler, Heun (2nd order) and adaptive Dormand-Prince RK45.

Shared by the probability-flow ODE, the likelihood and (later) flow matching.  ``v`` takes a state and a
scalar time tensor; states are single tensors.  Integration runs along ``ts`` (increasing or decreasing);
the fixed-step methods step exactly on ``ts``, RK45 integrates from ``ts[0]`` to ``ts[-1]`` with its own
steps and stops exactly at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from ..progress import progress_bar

from ..errors import NonFiniteError

__all__ = ["ODESolution", "integrate_ode", "ODE_METHODS"]

ODE_METHODS = ("euler", "heun", "rk45")
Velocity = Callable[[Tensor, Tensor], Tensor]
Callback = Callable[[dict], None]


@dataclass
class ODESolution:
    """Result of :func:`integrate_ode`: final state, number of velocity evaluations and steps taken."""

    x: Tensor
    nfe: int
    steps: int
    rejected: int = 0


def integrate_ode(
    v: Velocity,
    x: Tensor,
    ts: Tensor,
    *,
    method: str = "heun",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 100_000,
    callback: Callback | None = None,
    progress: bool = False,
) -> ODESolution:
    """Integrate ``dx/dt = v(x, t)`` from ``ts[0]`` to ``ts[-1]``.

    Args:
        v: velocity ``(x [*], t []) -> [*]``.
        x: initial state at ``ts[0]``.
        ts: times ``[K + 1]``, monotone.
        method: ``euler`` (1st order), ``heun`` (2nd order, 2 NFE per step) or ``rk45`` (adaptive, error
            per step below ``atol + rtol |x|`` in RMS norm).
        callback: called after every step with ``{"i", "t", "x"}``.
    """
    if method not in ODE_METHODS:
        raise ValueError(f"unknown ODE method {method!r}; choose one of {ODE_METHODS}")
    if method == "rk45":
        return _dopri5(v, x, ts[0], ts[-1], rtol, atol, max_steps, callback, progress)
    nfe = 0
    steps = range(len(ts) - 1)
    for i in progress_bar(steps, enabled=progress, desc=f"ode/{method}", leave=False):
        t, s = ts[i], ts[i + 1]
        h = s - t
        d = v(x, t)
        nfe += 1
        if method == "euler":
            x = x + h * d
        else:
            x_pred = x + h * d
            d2 = v(x_pred, s)
            nfe += 1
            x = x + 0.5 * h * (d + d2)
        if callback is not None:
            callback({"i": i, "t": s, "x": x})
    return ODESolution(x=x, nfe=nfe, steps=len(ts) - 1)


# Dormand-Prince 5(4) tableau
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_E = tuple(b5 - b4 for b5, b4 in zip(_B5, _B4))


def _dopri5(v, x, t0, t1, rtol, atol, max_steps, callback, progress) -> ODESolution:
    t = t0.clone() if isinstance(t0, Tensor) else torch.tensor(t0)
    t1 = t1 if isinstance(t1, Tensor) else torch.tensor(t1)
    span = float(t1 - t)
    direction = 1.0 if span > 0 else -1.0
    k1 = v(x, t)
    if not bool(torch.isfinite(k1).all()):
        raise NonFiniteError(f"rk45: the velocity field is not finite at t={float(t):.4g}")
    nfe, steps, rejected = 1, 0, 0
    h = _initial_step(v, x, t, k1, direction, rtol, atol, abs(span))
    nfe += 1
    # the bar counts per cent of the time span (adaptive steps have no count to show)
    bar = progress_bar(total=100, enabled=progress, desc="ode/rk45", unit="%", leave=False,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
    done = 0.0
    while direction * float(t1 - t) > 1e-12 * max(1.0, abs(span)):
        if steps + rejected >= max_steps:
            raise RuntimeError(f"rk45: no convergence after {max_steps} steps (t={float(t):.4g})")
        h = min(h, abs(float(t1 - t)))
        hd = direction * h
        ks = [k1]
        for j in range(1, 7):
            xj = x + hd * sum(a * k for a, k in zip(_A[j], ks) if a != 0.0)
            ks.append(v(xj, t + _C[j] * hd))
        nfe += 6
        x_new = x + hd * sum(b * k for b, k in zip(_B5, ks) if b != 0.0)
        err = hd * sum(e * k for e, k in zip(_E, ks) if e != 0.0)
        scale = atol + rtol * torch.maximum(x.abs(), x_new.abs())
        err_norm = float(torch.sqrt(torch.mean((err / scale) ** 2)))
        if not math.isfinite(err_norm):
            raise NonFiniteError(f"rk45: the velocity field is not finite near t={float(t):.4g}")
        if err_norm <= 1.0 or h < 1e-10:
            t = t + hd
            x = x_new
            k1 = ks[6]  # first-same-as-last
            steps += 1
            done += h
            bar.update(round(100 * done / abs(span)) - bar.n)
            if callback is not None:
                callback({"i": steps - 1, "t": t, "x": x})
        else:
            rejected += 1
        factor = 5.0 if err_norm == 0 else min(5.0, max(0.2, 0.9 * err_norm ** (-1 / 5)))
        h = h * factor
    bar.close()
    return ODESolution(x=x, nfe=nfe, steps=steps, rejected=rejected)


def _initial_step(v, x, t, k1, direction, rtol, atol, span) -> float:
    """Hairer, Norsett & Wanner's starting step size."""
    scale = atol + rtol * x.abs()
    d0 = float(torch.sqrt(torch.mean((x / scale) ** 2)))
    d1 = float(torch.sqrt(torch.mean((k1 / scale) ** 2)))
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, span)
    x1 = x + direction * h0 * k1
    k2 = v(x1, t + direction * h0)
    d2 = float(torch.sqrt(torch.mean(((k2 - k1) / scale) ** 2))) / h0
    h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1 / 5)
    return min(100 * h0, h1, span)
