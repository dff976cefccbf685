"""The one sampler registry: every sampler by name, its own options, and :func:`run_sampler`.

Each entry is a :class:`SamplerSpec`: the plain function (``fn(model, x, ts, *, generator, callback, progress,
cond, **options)``, as in k-diffusion), the time grid it runs on (the process's :func:`time_grid`, or the flow's
:func:`flow_time_grid` for the mixed flow), the arguments only a caller can supply (``needs``: DPS's observation,
RePaint's known part, the mixed flow's paths), and its own options -- the function's keyword arguments, passed
through unchanged (EDM's ``**sampler_kwargs``).  A config names a sampler and its ``options``; this module is the
one place that checks them (names against the function's signature, types against its defaults, values with the
sampler's own check) and the one place that builds the grid and calls the function.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from ..options import check_options, option_defaults
from .guidance import sample_dps
from .inpainting import sample_repaint
from .mixed import flow_time_grid, sample_mixed_flow
from .processes import time_grid
from . import samplers as smp

__all__ = ["SamplerSpec", "SAMPLERS", "get_sampler", "sampler_names", "check_sampler_options", "run_sampler"]

#: the arguments every sampler takes from the caller, never from a config's options
COMMON = ("model", "x", "state", "ts", "generator", "callback", "progress", "cond")


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler: ``fn`` and what running it needs (module docstring).  Calling the spec calls ``fn``."""

    fn: Callable[..., Any]
    grid: str = "process"  #: process (time_grid of model.process) | flow (flow_time_grid)
    needs: tuple[str, ...] = ()  #: keyword arguments only the caller can supply
    check: Callable[..., None] | None = None  #: the sampler's own value checks, called with its options
    only: tuple[str, ...] | None = None  #: its options, where not every keyword argument of ``fn`` is one

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def options(self) -> dict[str, Any]:
        """The sampler's own options and their defaults."""
        out = option_defaults(self.fn, COMMON + self.needs)
        return out if self.only is None else {n: out[n] for n in self.only}


SAMPLERS: dict[str, SamplerSpec] = {
    "ancestral": SamplerSpec(smp.sample_ancestral),
    "ddim": SamplerSpec(smp.sample_ddim),
    "euler_maruyama": SamplerSpec(smp.sample_euler_maruyama),
    "pc": SamplerSpec(smp.sample_pc, check=smp.check_pc_options),
    "ode_euler": SamplerSpec(partial(smp.sample_ode, method="euler"), only=("denoise",)),
    "ode_heun": SamplerSpec(partial(smp.sample_ode, method="heun"), only=("denoise",)),
    "ode_rk45": SamplerSpec(partial(smp.sample_ode, method="rk45")),
    "heun_churn": SamplerSpec(smp.sample_heun_churn, check=smp.check_heun_churn_options),
    "dps": SamplerSpec(sample_dps, needs=("observation",)),
    "repaint": SamplerSpec(sample_repaint, needs=("known", "mask")),
    "mixed_flow": SamplerSpec(sample_mixed_flow, grid="flow", needs=("path", "categorical", "space")),
}


def get_sampler(name: str) -> SamplerSpec:
    """Sampler by name (the spec is callable as the function)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]


def sampler_names(standalone: bool = False) -> list[str]:
    """All registered names; ``standalone``: those that need nothing beyond a denoiser and a prior sample."""
    return sorted(n for n, s in SAMPLERS.items() if not (standalone and (s.needs or s.grid != "process")))


def check_sampler_options(name: str, options: dict[str, Any], prefix: str = "sampler.options") -> dict[str, Any]:
    """The options of sampler ``name``, checked and typed: unknown names, wrong types and bad values raise
    ``ValueError`` naming ``prefix.KEY`` (see :func:`moldiff.options.check_options`)."""
    spec = get_sampler(name)
    return check_options(spec.fn, options, prefix, known=spec.options(), check=spec.check, owner=f"sampler {name!r}")


def run_sampler(
    name: str,
    model,
    x,
    *,
    steps: int,
    spacing: str = "uniform",
    rho: float = 7.0,
    generator=None,
    callback=None,
    progress: bool = True,
    cond=None,
    **options,
):
    """Run sampler ``name`` from the prior sample ``x`` in ``steps`` steps on its grid (``spacing``: uniform or
    karras for the process grid; uniform, cosine or quadratic for the flow grid), with its ``options`` and the
    arguments it ``needs`` passed through.  ``cond`` reaches every model call."""
    spec = get_sampler(name)
    missing = [n for n in spec.needs if n not in options]
    if missing:
        raise ValueError(f"sampler {name!r} needs {', '.join(missing)} from its caller")
    given = {k: v for k, v in options.items() if k in spec.needs}
    own = check_sampler_options(name, {k: v for k, v in options.items() if k not in spec.needs})
    if spec.grid == "flow":
        ts = flow_time_grid(steps, kind=spacing, device=x.x.device if hasattr(x, "x") else x.device)
    else:
        n = 1 if name == "ode_rk45" else steps  # the adaptive solver uses only the grid's two ends
        ts = time_grid(model.process, n, spacing=spacing, rho=rho, device=x.device, dtype=x.dtype)
    extra = {} if cond is None else {"cond": cond}
    return spec.fn(model, x, ts, generator=generator, callback=callback, progress=progress, **extra, **given, **own)

