"""Configuration: dataclasses are the Python API, YAML is their serialised form.

* :func:`from_dict` builds a dataclass from a nested dict; an unknown key or a value of the wrong type raises
  :class:`ConfigError` naming the key (``train.lr``), never a bare ``TypeError``.
* :func:`to_dict`, :func:`to_yaml` and :func:`flatten` go the other way (for checkpoints and MLflow).
* Reading YAML, ``--set`` overrides, finding shipped configs and validation live in :mod:`moldiff.loading`, which
  looks tasks up; this module is the schema alone, so neither imports the other in a circle.

Each task defines its config as a subclass of :class:`ExperimentConfig` whose ``data``, ``model`` and
``eval`` sections are its own dataclasses.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Union

import yaml

from .diffusion.couplings import Coupler
from .diffusion.losses import TIME_DISTRIBUTIONS, WEIGHTINGS
from .diffusion.preconditioning import EDMPreconditioning
from .diffusion.processes import PROCESS_KINDS, build_process
from .diffusion.registry import get_sampler, run_sampler
from .options import convert_scalar

__all__ = [
    "ConfigError",
    "ProcessConfig",
    "PrecondConfig",
    "LossConfig",
    "SamplerConfig",
    "CouplingConfig",
    "TrainConfig",
    "TrackingConfig",
    "ExperimentConfig",
    "from_dict",
    "to_dict",
    "to_yaml",
    "flatten",
]


class ConfigError(ValueError):
    """A config problem; the message names the offending key."""


# --------------------------------------------------------------------------------------------------
# shared sections
# --------------------------------------------------------------------------------------------------
@dataclass
class ProcessConfig:
    """The noise process (see :mod:`moldiff.diffusion.processes`)."""

    kind: str = "vp"  #: vp | subvp | ve | ddpm | flow
    beta_min: float = 0.1  #: vp, subvp
    beta_max: float = 20.0  #: vp, subvp
    sigma_min: float = 0.01  #: ve
    sigma_max: float = 50.0  #: ve
    schedule: str = "polynomial_2"  #: ddpm: linear | cosine | polynomial_2
    num_steps: int = 1000  #: ddpm: number of levels T
    precision: float = 1e-5  #: ddpm polynomial_2: noise floor at level 0
    t_min: float | None = None  #: continuous SDEs: smallest time (default: the process's own)
    sigma: float = 0.0  #: flow: path noise (I-CFM / OT-CFM: constant; SB-CFM: bridge scale)
    noise: str = "constant"  #: flow: constant | bridge (sigma sqrt(t (1 - t)), SB-CFM)
    prior_std: float = 1.0  #: flow: std of the Gaussian source

    def build(self):
        """The process, by :func:`~moldiff.diffusion.processes.build_process` with this kind's fields."""

        fields = {"vp": ("beta_min", "beta_max"), "subvp": ("beta_min", "beta_max"), "ve": ("sigma_min", "sigma_max"),
                  "ddpm": ("schedule", "num_steps", "precision"), "flow": ("sigma", "noise", "prior_std")}
        if self.kind not in PROCESS_KINDS:
            raise ConfigError(f"process.kind: unknown process {self.kind!r}; choose one of {sorted(PROCESS_KINDS)}")
        kw = {k: getattr(self, k) for k in fields[self.kind]}
        if self.t_min is not None and self.kind in ("vp", "subvp", "ve"):
            kw["t_min"] = self.t_min
        try:
            return build_process(self.kind, **kw)
        except ValueError as e:
            raise ConfigError(f"process: {e}") from e


def moved_to_options(selector: str, owners: dict[str, str | tuple[str, ...] | None]):
    """Class decorator (after ``@dataclass``) for a section whose flat keys of earlier versions now live in its
    ``options`` dict (passed through to a sampler or backbone).  ``owners`` maps each such key to the value(s) of
    the ``selector`` field (the sampler's ``name``, the model's ``backbone``) it applied to, ``None`` for all.  A
    config or checkpoint with the flat key still reads, with a deprecation message naming the new key: the value
    moves into ``options`` where it applied, and is dropped where it never had an effect (a flat union kept every
    key); the constructor takes the keys as keyword arguments the same way."""

    def wrap(cls):
        cls.MOVED_TO_OPTIONS, cls.OPTIONS_SELECTOR = dict(owners), selector
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            flat = {k: kwargs.pop(k) for k in list(kwargs) if k in owners}
            init(self, *args, **kwargs)
            if flat:
                self.options = fold_moved_options(type(self), {selector: getattr(self, selector), **flat,
                                                               "options": self.options}, type(self).__name__)["options"]

        cls.__init__ = __init__
        return cls

    return wrap


def fold_moved_options(cls: type, data: dict, prefix: str) -> dict:
    """``data`` (a section's dict) with the flat keys that ``cls`` moved to ``options`` folded in (see
    :func:`moved_to_options`)."""
    owners = getattr(cls, "MOVED_TO_OPTIONS", {})
    flat = [k for k in data if k in owners]
    if not flat:
        return data
    selector = cls.OPTIONS_SELECTOR
    chosen = data.get(selector, next(f.default for f in dataclasses.fields(cls) if f.name == selector))
    if not isinstance(data.get("options") or {}, dict):
        raise ConfigError(f"{prefix}.options: expected a mapping, got {data['options']!r}")
    data, options = dict(data), dict(data.get("options") or {})
    for k in flat:
        value, applies = data.pop(k), owners[k]
        applies = (applies,) if isinstance(applies, str) else applies
        if applies is None or chosen in applies:
            options[k] = value  # the flat key is the newer word (an override on a config that has options)
    warnings.warn(f"{prefix}: {', '.join(flat)} are now {prefix}.options.KEY (set for the {selector} they apply to)",
                  DeprecationWarning, stacklevel=4)
    data["options"] = options
    return data


def fold_moved_sections(cls: type, data: dict, quiet: bool = True) -> dict:
    """A whole config dict (for config class ``cls``) with every section's flat keys of earlier versions folded
    into its ``options``, nothing else filled in: what a file of an earlier version reads as today, before
    ``--set`` overrides land on it.  ``quiet``: without the deprecation message (a stored config, which the
    reader cannot change)."""
    out = dict(data)
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore", DeprecationWarning)
        for name, tp in typing.get_type_hints(cls).items():
            if isinstance(out.get(name), dict) and hasattr(tp, "MOVED_TO_OPTIONS"):
                out[name] = fold_moved_options(tp, out[name], name)
    return out


_PC, _RK45, _CHURN = "pc", "ode_rk45", "heun_churn"


@moved_to_options("name", {"snr": _PC, "corrector_steps": _PC, "predictor": _PC, "rtol": _RK45, "atol": _RK45,
                           "s_churn": _CHURN, "s_tmin": _CHURN, "s_tmax": _CHURN, "s_noise": _CHURN})
@dataclass
class SamplerConfig:
    """A sampler, its grid and its own options (see :mod:`moldiff.diffusion.registry`).

    ``options`` pass through to the sampler function unchanged (EDM's ``**sampler_kwargs``): ``pc`` takes
    ``snr``, ``corrector_steps``, ``predictor``; ``ode_rk45`` ``rtol``, ``atol``; ``heun_churn`` ``s_churn``,
    ``s_tmin``, ``s_tmax``, ``s_noise``.  ``moldiff.diffusion.SAMPLERS[name].options()`` lists them with their
    defaults; validation checks them against the function, in one place."""

    name: str = "ode_heun"  #: ancestral | ddim | euler_maruyama | pc | ode_euler | ode_heun | ode_rk45 | heun_churn
    steps: int = 500  #: grid steps (ignored by ode_rk45, which picks its own)
    spacing: str = "uniform"  #: time grid: uniform (in t) | karras (EDM's rho-spaced noise levels)
    rho: float = 7.0  #: karras spacing exponent
    denoise: bool = True  #: replace the last state by the model's x0 prediction
    options: dict[str, Any] = field(default_factory=dict)  #: the sampler's own options, passed through

    def arguments(self) -> dict[str, Any]:
        """Keyword arguments for :func:`~moldiff.diffusion.registry.run_sampler` (besides the name, the model, the
        prior sample and the caller's own arguments)."""
        kw: dict[str, Any] = {"steps": self.steps, "spacing": self.spacing, "rho": self.rho, **self.options}
        if "denoise" in get_sampler(self.name).options():
            kw.setdefault("denoise", self.denoise)
        return kw

    def run(self, model, x, *, generator=None, callback=None, progress: bool = True, cond=None):
        """Run this sampler through :func:`~moldiff.diffusion.registry.run_sampler` (kept for callers of earlier
        versions; tasks call ``run_sampler(cfg.name, model, x, **cfg.arguments(), ...)``)."""
        return run_sampler(self.name, model, x, generator=generator, callback=callback, progress=progress, cond=cond,
                           **self.arguments())


@dataclass
class CouplingConfig:
    """How flow matching pairs a minibatch of data with source samples (see :mod:`moldiff.diffusion.couplings`)."""

    kind: str = "independent"  #: independent | ot | sinkhorn | eq_ot | eq_sinkhorn
    reg: float = 0.05  #: sinkhorn: entropic regularisation (SB-CFM: 2 sigma^2 with normalize_cost false)
    normalize_cost: bool = True  #: divide the cost by its maximum before solving (torchcfm's default)
    starts: str = "pca"  #: eq_*: initial rotations of the alignment: pca | pca_permuted | pca+identity | identity | skew
    iterations: int = 10  #: eq_*: Hungarian / Kabsch alternations
    refine_starts: str = ""  #: eq_*: if set, re-align only the pairs the plan selects with these starts (two passes)
    refine_iterations: int = 10  #: eq_*: alternations of that second pass

    def build(self):

        try:
            return Coupler(kind=self.kind, reg=self.reg, normalize_cost=self.normalize_cost, starts=self.starts,
                           iterations=self.iterations, refine_starts=self.refine_starts,
                           refine_iterations=self.refine_iterations)
        except ValueError as e:
            raise ConfigError(f"coupling: {e}") from e


@dataclass
class PrecondConfig:
    """EDM's preconditioning of the denoiser (see :mod:`moldiff.diffusion.preconditioning`); ``edm`` needs the
    model to predict ``x0``."""

    kind: str = "none"  #: none | edm
    sigma_data: float = 1.0  #: edm: the data's standard deviation

    def build(self):

        if self.kind == "none":
            return None
        if self.kind != "edm":
            raise ConfigError(f"precond.kind: unknown preconditioning {self.kind!r}; choose none or edm")
        try:
            return EDMPreconditioning(self.sigma_data)
        except ValueError as e:
            raise ConfigError(f"precond.sigma_data: {e}") from e


@dataclass
class LossConfig:
    """How denoising training draws noise levels and weights them (see :func:`moldiff.diffusion.denoising_loss`)."""

    time_distribution: str = "uniform"  #: uniform (in t) | lognormal (EDM: ln(sigma/alpha) ~ N(p_mean, p_std^2)) | beta
    p_mean: float = -1.2  #: lognormal
    p_std: float = 1.2  #: lognormal
    beta_a: float = 1.0  #: beta: t ~ Beta(beta_a, beta_b), t = 0 the data (1, 2: SemlaFlow's Beta(2, 1) toward the data)
    beta_b: float = 2.0  #: beta
    weighting: str = "kind"  #: kind (plain MSE of the predicted kind) | edm (1 / c_out^2; needs precond.kind edm)
    cond_dropout: float = 0.0  #: conditional models: probability of training a sample unconditionally (for CFG)

    def check(self) -> None:

        raise_failed([
            (self.time_distribution in TIME_DISTRIBUTIONS, "loss.time_distribution", f"choose one of {TIME_DISTRIBUTIONS}"),
            (self.weighting in WEIGHTINGS, "loss.weighting", f"choose one of {WEIGHTINGS}"),
            (self.p_std > 0, "loss.p_std", "must be > 0"),
            (self.beta_a > 0 and self.beta_b > 0, "loss.beta_a", "beta_a and beta_b must be > 0"),
            (0 <= self.cond_dropout <= 1, "loss.cond_dropout", "must be in [0, 1]"),
        ])

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~moldiff.diffusion.denoising_loss`."""
        return {"distribution": self.time_distribution, "p_mean": self.p_mean, "p_std": self.p_std,
                "beta_a": self.beta_a, "beta_b": self.beta_b, "weighting": self.weighting}


@dataclass
class TrainConfig:
    steps: int = 10_000  #: optimiser steps
    batch_size: int = 256  #: per process
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 0  #: linear LR warm-up
    grad_clip: float = 1.0  #: max global grad norm; 0 disables clipping
    ema_decay: float = 0.999
    bf16: bool = True  #: bf16 autocast (CUDA only)
    device: str = "auto"  #: auto | cpu | cuda | cuda:N
    log_every: int = 100
    eval_every: int = 0  #: 0: evaluate only at the end
    ckpt_every: int = 1000
    keep_checkpoints: int = 2  #: numbered checkpoints kept beside last.pt
    max_nonfinite: int = 20  #: abort after this many non-finite steps in a row
    compile: bool = False  #: torch.compile the model
    max_minutes: float = 0.0  #: wall-clock budget of this invocation's training loop (0: none); stops early, saves, evaluates
    max_cpu_minutes: float = 0.0  #: the same in CPU time of the process (all its threads): equal compute on a shared machine
    init: str = ""  #: warm start of a fresh run: a checkpoint (its EMA weights) or pretrained:NAME; fresh optimiser
    threads: int = 0  #: CPU threads (0: measured while training -- moldiff.training.threads; env OMP_NUM_THREADS wins)


@dataclass
class TrackingConfig:
    enabled: bool = True
    experiment: str = "moldiff"
    uri: str | None = None  #: default sqlite:///<runs_root>/mlflow.db
    log_checkpoints: bool = True  #: log the final checkpoint as an MLflow artifact
    timeout: float = 30.0  #: seconds to wait for a store locked by another process / a silent server, then fail


@dataclass
class ExperimentConfig:
    """Base of every task's config."""

    task: str = ""
    name: str = ""  #: run name; runs_root/<experiment>/<name> holds its checkpoints
    seed: int = 0
    runs_root: str = "runs"
    process: ProcessConfig = field(default_factory=ProcessConfig)
    precond: PrecondConfig = field(default_factory=PrecondConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    #: keys (``section.key``) or whole sections that ``--resume`` may change: how long and how fast to train, how
    #: to log, sample and evaluate.  Everything else (task, seed, process, model, data, batch size, a task's
    #: training recipe) defines what the checkpoint's weights and optimiser state mean and is refused on resume.
    #: Tasks extend it with their own sampling-time keys.
    resume_mutable: ClassVar[tuple[str, ...]] = (
        "name", "runs_root", "sampler", "eval", "tracking", "data.cache_dir",
        "train.steps", "train.lr", "train.weight_decay", "train.betas", "train.warmup_steps", "train.grad_clip",
        "train.ema_decay", "train.bf16", "train.device", "train.log_every", "train.eval_every", "train.ckpt_every",
        "train.keep_checkpoints", "train.max_nonfinite", "train.compile", "train.max_minutes", "train.max_cpu_minutes",
        "train.init", "train.threads",
    )

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_root) / self.tracking.experiment / (self.name or self.task)


# --------------------------------------------------------------------------------------------------
# dict <-> dataclass with type checking
# --------------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping (section {tp.__name__}), got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (inner,) = typing.get_args(tp)[:1] or (Any,)
        items = [_convert(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp in (bool, int, float, str):
        return as_config_error(convert_scalar, value, tp, key)
    raise ConfigError(f"{key}: unsupported config type {_type_name(tp)}")


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict; unknown keys and wrong types raise :class:`ConfigError`."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    data = fold_moved_options(cls, data, prefix or cls.__name__)
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            raise ConfigError(f"unknown config key {key!r} (known keys here: {', '.join(sorted(names))})")
        kwargs[k] = _convert(v, hints[k], key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix or cls.__name__}: {e}") from e


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-3}} -> {"train.lr": 1e-3}`` (lists kept as values; an ``options`` dict, passed through
    to a sampler or backbone, is one value: it compares, logs and resumes as a whole)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and k != "options":
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def as_config_error(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with a ``ValueError`` (whose message names the key) raised as :class:`ConfigError`."""
    try:
        return fn(*args, **kwargs)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from None


def raise_failed(checks: list[tuple[bool, str, str]]) -> None:
    """Raise :class:`ConfigError` for the first failed ``(ok, key, message)`` check."""
    for ok, key, msg in checks:
        if not ok:
            raise ConfigError(f"{key}: {msg}")


#: names that moved to :mod:`moldiff.loading` (loading and validation, apart from the schema: no import circle)
_MOVED = {"config_folders", "shipped_configs", "resolve_config", "read_yaml", "parse_overrides", "apply_overrides", "load_config", "validate"}


def __getattr__(name: str):
    if name in _MOVED:
        import importlib  # lazy: moldiff.loading imports this module
        import warnings

        warnings.warn(f"moldiff.config.{name} moved to moldiff.loading.{name}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module("moldiff.loading"), name)
    raise AttributeError(f"module 'moldiff.config' has no attribute {name!r}")
