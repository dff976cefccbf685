"""What ``--resume`` may change, and applying those changes to a restored optimiser.

A resumed run continues a checkpoint under the config given now.  Keys listed in the config class's
``resume_mutable`` (steps, learning rate, logging, sampling, evaluation, ...) may differ from the checkpoint's
config and take effect; any other difference (model shape, process, data, seed, batch size) is refused with a
:class:`~moldiff.config.ConfigError` naming the keys, before any weights are loaded.
"""

from __future__ import annotations

from typing import Any

import torch

from ..config import ConfigError, ExperimentConfig, flatten, fold_moved_sections, to_dict

__all__ = ["resume_changes", "apply_optimizer_settings"]


def _allowed(key: str, mutable: tuple[str, ...]) -> bool:
    return any(key == m or key.startswith(m + ".") for m in mutable)


def _current_form(saved: dict[str, Any], cls: type) -> dict[str, Any]:
    """The checkpoint's config with the keys of earlier versions in their current place (flat backbone and sampler
    keys in ``options``), so that they compare with the new config key by key; nothing else filled in."""
    return fold_moved_sections(cls, saved)


def resume_changes(saved: dict[str, Any], cfg: ExperimentConfig) -> dict[str, tuple[Any, Any]]:
    """``{key: (checkpoint value, new value)}`` for every allowed difference between the checkpoint's config
    ``saved`` and ``cfg``; :class:`ConfigError` naming each key that may not change on resume."""
    old, new = flatten(_current_form(saved, type(cfg))), flatten(to_dict(cfg))
    # keys only one side has (an option added or removed since the checkpoint was written) are not changes
    diff = {k: (old[k], new[k]) for k in sorted(set(old) & set(new)) if old[k] != new[k]}
    refused = {k: v for k, v in diff.items() if not _allowed(k, type(cfg).resume_mutable)}
    if refused:
        listed = "; ".join(f"{k}: checkpoint {a!r}, config {b!r}" for k, (a, b) in refused.items())
        raise ConfigError(
            f"cannot resume with a different {', '.join(refused)} ({listed}): these define the checkpoint's weights "
            f"or data stream. Keys that may change on resume: {', '.join(type(cfg).resume_mutable)}. "
            "Start a new run (another name, or --overwrite) to change the others"
        )
    return diff


def apply_optimizer_settings(cfg: ExperimentConfig, opt: torch.optim.Optimizer, sched: Any) -> None:
    """Put the config's learning rate, weight decay and betas into a restored optimiser and LR schedule (whose
    state dicts carry the checkpoint's values)."""
    t = cfg.train
    sched.base_lrs = [t.lr for _ in opt.param_groups]
    factor = sched.lr_lambdas[0](sched.last_epoch)
    for g in opt.param_groups:
        g["initial_lr"] = t.lr
        g["lr"] = t.lr * factor
        g["weight_decay"] = t.weight_decay
        g["betas"] = tuple(t.betas)
    sched._last_lr = [g["lr"] for g in opt.param_groups]
