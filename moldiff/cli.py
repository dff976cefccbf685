"""``moldiff`` command line: parse, load the config, call the Python API -- nothing else."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from .commands import add_overrides as add_set
from .commands import task_commands
from .config import ConfigError
from .errors import DataError, NonFiniteError
from .training.checkpoint import CheckpointError
from .training.interrupts import TrainingInterrupted
from .training.tracking import TrackingError
from .training.trainer import NonFiniteLossError
from . import api
from .config import to_yaml
from .loading import load_config
from .errors import NonFiniteError
from .fileio import write_json
from .loading import read_yaml, shipped_configs
from .metrics import text_table

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moldiff", description="Diffusion models for molecules and physics.")
    sub = p.add_subparsers(dest="command", required=True)


    t = sub.add_parser("train", help="train a model from a YAML config")
    t.add_argument("config", help="YAML config file, or the name of a shipped config (moldiff config list)")
    add_set(t)
    t.add_argument("--resume", default=None, metavar="auto|PATH",
                   help="'auto' continues the run's last checkpoint if there is one; or a checkpoint path")
    t.add_argument("--overwrite", action="store_true",
                   help="start over: delete the checkpoints an earlier run of the same name left in its folder")
    t.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")

    s = sub.add_parser("sample", help="draw samples from a checkpoint or a shipped model (--pretrained qm9)")
    s.add_argument("checkpoint", nargs="?", default=None)
    s.add_argument("--pretrained", default=None, metavar="NAME", help="a model shipped with moldiff (qm9)")
    s.add_argument("-n", "--num", type=int, required=True, help="number of samples")
    s.add_argument("--out", required=True, help="output file (format by suffix, task-dependent)")
    s.add_argument("--sampler", default=None, help="sampler name (default: the config's)")
    s.add_argument("--steps", type=int, default=None, help="sampler steps (default: the config's)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto")
    s.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    s.add_argument("--relax", nargs="?", const="", default=None, metavar="METHOD",
                   help="relax the samples with the task's classical energy before writing them (molecules: RDKit "
                        "MMFF94, UFF where MMFF lacks parameters; --relax uff prefers UFF)")
    s.add_argument("--relax-iters", type=int, default=200, metavar="N", help="at most N minimiser iterations (200)")
    add_set(s)
    s.add_argument("--no-progress", action="store_true")

    e = sub.add_parser("eval", help="evaluate a checkpoint or a shipped model (the task's own evaluation)")
    e.add_argument("checkpoint", nargs="?", default=None, metavar="CHECKPOINT")
    e.add_argument("--pretrained", default=None, metavar="NAME", help="evaluate a shipped model (qm9)")
    e.add_argument("--json", default=None, metavar="PATH", help="also write the metrics as JSON")
    e.add_argument("--figures", default=None, metavar="DIR", help="save the evaluation figures as PNG here")
    e.add_argument("--seed", type=int, default=None)
    e.add_argument("--device", default="auto")
    e.add_argument("--no-ema", action="store_true")
    add_set(e)
    e.add_argument("--no-progress", action="store_true")

    c = sub.add_parser("config", help="inspect configs")
    csub = c.add_subparsers(dest="config_command", required=True)
    show = csub.add_parser("show", help="print a config with defaults filled in and overrides applied")
    show.add_argument("config")
    add_set(show)
    csub.add_parser("list", help="list the configs that ship with moldiff (usable by name from any folder)")


    for cmd in task_commands().values():  # what tasks add (moldiff.commands entry points)
        tp = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description or cmd.help)
        cmd.add_arguments(tp)
        tp.set_defaults(task_command=cmd)
    for name, sp in sub.choices.items():
        if name != "config":
            sp.add_argument("--threads", type=int, default=None, metavar="N",
                            help="CPU threads for torch (default: OMP_NUM_THREADS if set; training measures 1 against "
                                 "all cores and keeps the faster)")
        sp.add_argument("--verbose", action="store_true", help="also show the INFO lines of MLflow and its database")
    return p


def _quiet_third_parties(verbose: bool) -> None:
    """MLflow's and alembic's INFO lines (database set-up, migrations) only with ``--verbose``; warnings always."""
    if verbose:
        return
    import logging
    import os

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow configures its loggers on import
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _apply_threads(n: int | None) -> None:
    """``--threads N``: torch's thread count, and ``MOLDIFF_THREADS`` so that the trainer keeps it fixed."""
    if n is None:
        return
    if n < 1:
        raise ValueError(f"--threads must be >= 1, got {n}")
    import os

    import torch

    os.environ["MOLDIFF_THREADS"] = str(n)
    torch.set_num_threads(n)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    _quiet_third_parties(getattr(args, "verbose", False))
    import warnings

    warnings.formatwarning = lambda message, category, *a, **k: f"moldiff: warning: {message}\n"
    try:
        _apply_threads(getattr(args, "threads", None))
        return _run(args)
    except (ConfigError, CheckpointError, FileNotFoundError, DataError, TrackingError) as e:
        print(f"moldiff: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"moldiff: training aborted: {e}", file=sys.stderr)
        return 3
    except NonFiniteError as e:
        print(f"moldiff: error: {e}{'' if args.command == 'train' else '; nothing was written'}", file=sys.stderr)
        return 3
    except FloatingPointError as e:  # a simulation or computation that diverged on the given input
        print(f"moldiff: error: {e}; nothing was written", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        print(f"moldiff: {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("moldiff: interrupted; nothing was written", file=sys.stderr)
        return 130
    except (ValueError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        print(f"moldiff: error: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    if getattr(args, "task_command", None) is not None:
        return args.task_command.run(args)
    if args.command == "config" and args.config_command == "list":
        for name, path in shipped_configs().items():
            print(f"{name:28s} task {read_yaml(path).get('task', '?')}")
        return 0
    if args.command == "config":
        print(to_yaml(load_config(args.config, args.overrides)), end="")
        return 0
    if args.command == "train":
        cfg = load_config(args.config, args.overrides)
        if args.dry_run:
            print(to_yaml(cfg), end="")
            return 0
        res = api.train(cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
        print(f"trained {res.step} steps in {res.seconds:.1f} s; checkpoint: {res.checkpoint}")
        _print_metrics(res.metrics)
        if res.run_id:
            print(f"MLflow run {res.run_id}: mlflow ui --backend-store-uri sqlite:///{Path(cfg.runs_root).resolve()}/mlflow.db")
        return 0
    if args.command == "sample":
        api.sample(args.checkpoint, args.num, pretrained=args.pretrained, out=args.out, sampler=args.sampler, steps=args.steps, seed=args.seed,
                   overrides=args.overrides, use_ema=not args.no_ema, device=args.device,
                   progress=not args.no_progress, relax=args.relax, relax_iters=args.relax_iters)
        print(f"wrote {args.num} samples to {args.out}")
        return 0
    if args.command == "eval":
        _check_eval_paths(args)
        if args.checkpoint is None and args.pretrained is None:
            raise ValueError("eval needs a checkpoint or --pretrained NAME")
        res = api.evaluate(args.checkpoint, pretrained=args.pretrained, overrides=args.overrides, use_ema=not args.no_ema, device=args.device,
                           seed=args.seed, progress=not args.no_progress)
        _print_metrics(res.metrics)
        bad = sorted(k for k, v in res.metrics.items() if not math.isfinite(v))
        if bad:
            raise NonFiniteError(f"non-finite metrics: {', '.join(bad)}")
        if args.json:
            write_json(args.json, res.metrics)
        if args.figures:
            import matplotlib.pyplot as plt

            d = Path(args.figures)
            d.mkdir(parents=True, exist_ok=True)
            for name, fig in res.figures.items():
                fig.savefig(d / f"{name}.png", dpi=120)
                plt.close(fig)
        return 0
    raise AssertionError(args.command)


def _check_eval_paths(args) -> None:
    """Reject unusable inputs and output paths before an evaluation runs."""
    if args.json and Path(args.json).is_dir():
        raise ValueError(f"--json {args.json}: is a folder; give a file name")
    if args.figures and Path(args.figures).exists() and not Path(args.figures).is_dir():
        raise ValueError(f"--figures {args.figures}: is a file; give a folder")
    path = args.checkpoint
    if path is not None and Path(path).suffix.lower() not in (".pt", ".pth"):
        others = "; ".join(f"moldiff {c.name}: {c.help}" for c in task_commands().values())
        raise ValueError(f"{path}: unsupported file type {Path(path).suffix!r}; eval reads checkpoints (.pt)"
                         + (f". Commands that tasks add: {others}" if others else ""))


def _print_metrics(metrics: dict[str, float]) -> None:
    if metrics:
        print(text_table([(k, f"{metrics[k]:.4f}") for k in sorted(metrics)], indent="  "))


if __name__ == "__main__":
    sys.exit(main())
