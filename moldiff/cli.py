"""``moldiff`` command line: parse, load the config, call the Python API -- nothing else."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moldiff", description="Diffusion models for molecules and physics.")
    sub = p.add_subparsers(dest="command", required=True)

    def add_set(sp):
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.lr=1e-4 (repeatable)")

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
    add_set(s)
    s.add_argument("--no-progress", action="store_true")

    a = sub.add_parser("assimilate", help="posterior samples given observations (trajectory checkpoints)",
                       description="Reconstruct trajectories from noisy observations with a trained trajectory prior. "
                                   "The observation operator and noise level are the checkpoint config's "
                                   "`observation` section (change them with --set observation.every=10 etc.).")
    a.add_argument("checkpoint", nargs="?", default=None)
    a.add_argument("--pretrained", default=None, metavar="NAME", help="a shipped trajectory prior (lorenz63, lorenz96)")
    a.add_argument("--observations", required=True, metavar="OBS.npz", help="an .npz with y [B, P] (and optionally length)")
    a.add_argument("--out", required=True, help="posterior samples [B, n, L, ...]: .npz (key samples) or .npy")
    a.add_argument("-n", "--num", type=int, default=16, help="posterior samples per observed trajectory")
    a.add_argument("--length", type=int, default=None, help="states per trajectory (default: the file's, else eval.length)")
    a.add_argument("--method", default=None, choices=["sda", "mmps", "dps"],
                   help="default: the model config's first of these in eval.methods")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--device", default="auto")
    a.add_argument("--no-ema", action="store_true")
    add_set(a)
    a.add_argument("--no-progress", action="store_true")

    e = sub.add_parser("eval", help="evaluate a checkpoint, a molecule file (.sdf/.xyz/.extxyz) or a dataset split",
                       description="CHECKPOINT (.pt): the task's evaluation. FILE.sdf|.xyz|.extxyz: the EDM molecule "
                                   "metrics. --dataset qm9 --split S: the same metrics on the data itself.")
    e.add_argument("checkpoint", nargs="?", default=None, metavar="CHECKPOINT|FILE")
    e.add_argument("--pretrained", default=None, metavar="NAME", help="evaluate a shipped model (qm9)")
    e.add_argument("--graph", action="store_true",
                   help="FILE.sdf: score the file's own bonds and charges (generated-graph protocol) besides EDM's rule")
    e.add_argument("--dataset", default=None, choices=["qm9"], help="score a dataset split instead of a file")
    e.add_argument("--split", default="train", choices=["train", "valid", "test"])
    e.add_argument("--limit", type=int, default=None, help="with --dataset: only the split's first N molecules")
    e.add_argument("--no-novelty", action="store_true", help="molecules: skip novelty against QM9's training split")
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
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .config import ConfigError
    from .molecules.qm9 import QM9CacheError
    from .training.checkpoint import CheckpointError
    from .training.trainer import NonFiniteLossError

    from .errors import NonFiniteError
    from .training.interrupts import TrainingInterrupted
    from .training.tracking import TrackingError

    try:
        return _run(args)
    except (ConfigError, CheckpointError, FileNotFoundError, QM9CacheError, TrackingError) as e:
        print(f"moldiff: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"moldiff: training aborted: {e}", file=sys.stderr)
        return 3
    except NonFiniteError as e:
        print(f"moldiff: error: {e}{'' if args.command == 'train' else '; nothing was written'}", file=sys.stderr)
        return 3
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
    from . import api
    from .config import load_config, to_yaml

    if args.command == "config" and args.config_command == "list":
        from .config import read_yaml, shipped_configs

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
                   progress=not args.no_progress)
        print(f"wrote {args.num} samples to {args.out}")
        return 0
    if args.command == "assimilate":
        x = api.assimilate(args.checkpoint, args.observations, n=args.num, length=args.length, method=args.method,
                           out=args.out, seed=args.seed, overrides=args.overrides, use_ema=not args.no_ema,
                           device=args.device, progress=not args.no_progress, pretrained=args.pretrained)
        print(f"wrote {x.shape[1]} posterior samples of {x.shape[0]} trajectories ({x.shape[2]} states each) to {args.out}")
        return 0
    if args.command == "eval":
        _check_eval_paths(args)
    if args.command == "eval" and (args.dataset or _is_molecule_file(args.checkpoint)):
        if args.dataset and args.checkpoint:
            raise ValueError("give either a file or --dataset, not both")
        if args.graph:
            if args.dataset:
                raise ValueError("--graph scores an .sdf file's own bonds; it does not apply to --dataset")
            g = api.evaluate_graph_file(args.checkpoint, novelty=not args.no_novelty, progress=not args.no_progress)
            print(g.table())
            if args.json:
                _write_json(args.json, {**g.flat(), "failures": g.failures})
            return 0
        if args.dataset:
            m = api.evaluate_dataset(args.dataset, args.split, limit=args.limit, novelty=not args.no_novelty,
                                     progress=not args.no_progress)
        else:
            m = api.evaluate_molecule_file(args.checkpoint, novelty=not args.no_novelty, progress=not args.no_progress)
        print(m.table())
        if args.json:
            _write_json(args.json, m.as_dict())
        return 0
    if args.command == "eval":
        if args.checkpoint is None and args.pretrained is None:
            raise ValueError("eval needs a checkpoint, --pretrained NAME, a molecule file or --dataset")
        res = api.evaluate(args.checkpoint, pretrained=args.pretrained, overrides=args.overrides, use_ema=not args.no_ema, device=args.device,
                           seed=args.seed, progress=not args.no_progress)
        _print_metrics(res.metrics)
        bad = sorted(k for k, v in res.metrics.items() if not math.isfinite(v))
        if bad:
            from .errors import NonFiniteError

            raise NonFiniteError(f"non-finite metrics: {', '.join(bad)}")
        if args.json:
            _write_json(args.json, res.metrics)
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
    if path is not None and not _is_molecule_file(path) and Path(path).suffix.lower() not in (".pt", ".pth"):
        raise ValueError(f"{path}: unsupported file type {Path(path).suffix!r}; eval reads checkpoints (.pt) and "
                         "molecule files (.sdf, .xyz, .extxyz)")


def _is_molecule_file(path: str | None) -> bool:
    return path is not None and Path(path).suffix.lower() in (".sdf", ".xyz", ".extxyz")


def _write_json(path: str, data: dict) -> None:
    from .fileio import write_atomically

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out, lambda fh: fh.write(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def _print_metrics(metrics: dict[str, float]) -> None:
    if not metrics:
        return
    width = max(len(k) for k in metrics)
    for k in sorted(metrics):
        print(f"  {k:<{width}}  {metrics[k]:.4f}")


if __name__ == "__main__":
    sys.exit(main())
