"""Loading configs: YAML files (and the configs plugins ship, by name), ``--set`` overrides, the task's config
class from the task registry, and value checks.  The schema (the dataclasses) is :mod:`moldiff.config`; this module
sits above it and above :mod:`moldiff.tasks`, so no import goes in a circle."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError, ExperimentConfig, as_config_error, fold_moved_sections, from_dict, raise_failed
from .diffusion.denoiser import PREDICTION_KINDS
from .diffusion.processes import FLOW_NOISE, PROCESS_KINDS, SPACINGS
from .diffusion.registry import check_sampler_options, sampler_names
from .tasks import get_task

__all__ = ["config_folders", "shipped_configs", "resolve_config", "read_yaml", "parse_overrides", "apply_overrides",
           "load_config", "validate"]

# --------------------------------------------------------------------------------------------------
# YAML and overrides
# --------------------------------------------------------------------------------------------------
class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (not a silent overwrite)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key].line + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def config_folders() -> dict[str, Path]:
    """The config folders that installed plugins ship, by plugin (the ``moldiff.configs`` entry points)."""
    from importlib.metadata import entry_points

    return {ep.name: Path(ep.load()) for ep in entry_points(group="moldiff.configs")}


def shipped_configs() -> dict[str, Path]:
    """The configs that ship with moldiff's plugins, by name (``toy2d_vp``, ``smoke/toy2d_vp``, ``qm9_flow_cpu``,
    ...); a name two plugins both ship is a :class:`ConfigError` naming both files."""
    out: dict[str, Path] = {}
    for folder in config_folders().values():
        for p in sorted(folder.rglob("*.yaml")):
            name = str(p.relative_to(folder).with_suffix(""))
            if name in out:
                raise ConfigError(f"two plugins ship a config named {name!r}: {out[name]} and {p}")
            out[name] = p
    return dict(sorted(out.items()))


def resolve_config(source: str | Path) -> Path:
    """A config file: ``source`` itself if it is a file, else the shipped config of that name (``qm9_edm``,
    ``smoke/toy2d_vp``, with or without ``.yaml``), so that ``moldiff train qm9_edm`` works from any folder."""
    path = Path(source)
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(f"{source} is a folder; give a YAML config file or the name of a shipped config "
                          "(`moldiff config list` shows them)")
    name = str(source).removesuffix(".yaml").removeprefix("configs/")
    shipped = shipped_configs()
    if name in shipped:
        return shipped[name]
    raise ConfigError(f"config file not found: {source} (and no shipped config of that name; `moldiff config list` "
                      "shows them)")


def read_yaml(path: str | Path) -> dict:
    path = resolve_config(path)
    try:
        data = _load_yaml(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def parse_overrides(items: list[str] | None) -> list[tuple[str, Any]]:
    """``["train.lr=1e-4", "tracking.enabled=false"] -> [("train.lr", 1e-4), ...]`` (values parsed as YAML)."""
    out = []
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = _load_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {key}: cannot parse value {raw!r}: {e}") from e
        out.append((key, value))
    return out


def apply_overrides(data: dict, overrides: list[tuple[str, Any]]) -> dict:
    """Set dotted keys in a nested dict (copying it).  Validity is checked by :func:`from_dict`."""
    import copy

    data = copy.deepcopy(data)
    for key, value in overrides:
        node = data
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {key}: {'.'.join(parts[: i + 1])} is not a section")
            node = nxt
        node[parts[-1]] = value
    return data


def load_config(
    source: str | Path | dict, overrides: list[str] | None = None, *, name_from_file: bool = True,
    stored: bool = False,
) -> ExperimentConfig:
    """Load a task config from a YAML path (or a dict), apply ``--set`` overrides and validate.

    The run name defaults to the YAML file's stem.  ``stored``: the dict comes from a checkpoint or a shipped file,
    whose keys of earlier versions are read without a deprecation message (the reader cannot change the file).
    """
    data = read_yaml(source) if not isinstance(source, dict) else dict(source)
    pairs = parse_overrides(overrides)
    task_name = dict(pairs).get("task", data.get("task"))
    if not task_name or not isinstance(task_name, str):
        raise ConfigError("task: every config needs a 'task' key naming its task (e.g. task: toy2d)")
    task_cls = get_task(task_name)
    # keys of earlier versions in the file take their place first, so that an override lands on them
    data = fold_moved_sections(task_cls.config_class, data, quiet=stored)
    data = apply_overrides(data, pairs)
    with warnings.catch_warnings():
        if stored:
            warnings.simplefilter("ignore", DeprecationWarning)
        cfg = from_dict(task_cls.config_class, data)
    if not cfg.name and name_from_file and not isinstance(source, dict):
        cfg.name = Path(str(source).removesuffix(".yaml")).name
    validate(cfg)
    return cfg


_DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")


def validate(cfg: ExperimentConfig) -> None:
    """Value checks that types cannot express."""

    t = cfg.train
    checks = [
        (t.steps >= 0, "train.steps", "must be >= 0"),
        (t.batch_size >= 1, "train.batch_size", "must be >= 1"),
        (t.lr > 0, "train.lr", "must be > 0"),
        (0.0 <= t.ema_decay < 1.0, "train.ema_decay", "must be in [0, 1)"),
        (t.grad_clip >= 0, "train.grad_clip", "must be >= 0 (0 disables)"),
        (t.max_nonfinite >= 1, "train.max_nonfinite", "must be >= 1"),
        (t.log_every >= 1, "train.log_every", "must be >= 1"),
        (t.ckpt_every >= 1, "train.ckpt_every", "must be >= 1"),
        (t.keep_checkpoints >= 1, "train.keep_checkpoints", "must be >= 1"),
        (t.eval_every >= 0, "train.eval_every", "must be >= 0 (0: only at the end)"),
        (t.warmup_steps >= 0, "train.warmup_steps", "must be >= 0"),
        (t.threads >= 0, "train.threads", "must be >= 0 (0: chosen by measurement)"),
        (t.weight_decay >= 0, "train.weight_decay", "must be >= 0"),
        (all(0 <= b < 1 for b in t.betas), "train.betas", "must lie in [0, 1)"),
        (cfg.tracking.timeout > 0, "tracking.timeout", "must be > 0 seconds"),
        (len(t.betas) == 2, "train.betas", "needs two values"),
        (cfg.process.kind in PROCESS_KINDS, "process.kind", f"must be one of {sorted(PROCESS_KINDS)}"),
        (cfg.process.noise in FLOW_NOISE, "process.noise", f"must be one of {FLOW_NOISE}"),
        (cfg.process.sigma >= 0 and cfg.process.prior_std > 0, "process.sigma", "needs sigma >= 0 and prior_std > 0"),
        (cfg.sampler.name in sampler_names(standalone=True), "sampler.name",
         f"must be one of {sampler_names(standalone=True)}"),
        (cfg.sampler.steps >= 1, "sampler.steps", "must be >= 1"),
        (_DEVICE_RE.fullmatch(t.device) is not None, "train.device", "must be auto, cpu, cuda or cuda:N"),
        (cfg.process.sigma_max > cfg.process.sigma_min > 0, "process.sigma_min", "needs 0 < sigma_min < sigma_max"),
        (cfg.process.beta_max > cfg.process.beta_min > 0, "process.beta_min", "needs 0 < beta_min < beta_max"),
    ]
    ev = getattr(cfg, "eval", None)
    for i, name in enumerate(getattr(ev, "samplers", []) or []):
        checks.append((name in sampler_names(standalone=True), f"eval.samplers[{i}]",
                       f"unknown sampler {name!r}; choose from {sampler_names(standalone=True)}"))
    pred = getattr(getattr(cfg, "model", None), "prediction", None)
    if pred is not None:
        checks.append((pred in PREDICTION_KINDS, "model.prediction", f"must be one of {PREDICTION_KINDS}"))
    flow = cfg.process.kind == "flow"
    checks += [
        (cfg.sampler.spacing in SPACINGS, "sampler.spacing", f"must be one of {SPACINGS}"),
        (cfg.sampler.rho > 0, "sampler.rho", "must be > 0"),
        (not flow or (cfg.sampler.spacing == "uniform" and cfg.sampler.name != "heun_churn"), "sampler.name",
         "heun_churn and the karras spacing need noise levels: a diffusion process, not a flow path"),
        (cfg.precond.kind == "none" or not flow, "precond.kind", "EDM's preconditioning is for diffusion processes"),
        (cfg.precond.kind == "none" or pred == "x0", "model.prediction" if pred else "precond.kind",
         "a preconditioned (precond.kind: edm) model predicts x0" if pred else
         "this task's model has no model.prediction to set to x0: EDM's preconditioning is not available for it"),
        (cfg.loss.weighting != "edm" or cfg.precond.kind == "edm", "loss.weighting", "edm weighting needs precond.kind: edm"),
        (cfg.loss.time_distribution != "lognormal" or not flow, "loss.time_distribution",
         "the log-normal noise levels are for diffusion processes"),
        (cfg.loss.time_distribution != "beta" or not cfg.process.kind == "ddpm", "loss.time_distribution",
         "the beta time distribution is for continuous processes, not a discrete schedule"),
    ]
    cfg.precond.build()  # an unknown kind or a bad sigma_data, named, before the checks that assume a known kind
    raise_failed(checks)
    # the sampler's own options: names, types and values, checked against the sampler itself
    cfg.sampler.options = as_config_error(check_sampler_options, cfg.sampler.name, cfg.sampler.options)
    cfg.loss.check()
    task_checks = getattr(cfg, "check", None)  # a task config's own value checks
    if callable(task_checks):
        task_checks()
    try:
        proc = cfg.process.build()  # schedule names, step counts
    except ConfigError:
        raise
    except ValueError as e:
        key = "process.schedule" if "schedule" in str(e) else "process"
        raise ConfigError(f"{key}: {e}") from e
    if proc.num_levels:  # a discrete schedule cannot take more steps than it has levels
        levels = proc.num_levels - round(proc.t_min * proc.num_levels)
        for key, steps in (("sampler.steps", cfg.sampler.steps), ("eval.steps", getattr(ev, "steps", None))):
            if isinstance(steps, int) and steps > levels and not (key == "sampler.steps" and cfg.sampler.name == "ode_rk45"):
                raise ConfigError(f"{key}: {steps} steps exceed the {levels} levels of the discrete schedule "
                                  f"(process.num_steps {proc.num_levels}); use at most {levels}")
