"""``moldiff assimilate``: the command the trajectory task adds to the CLI (see :mod:`moldiff.commands`).
Nothing heavy is imported here: the parser is built on every ``moldiff`` call."""

from __future__ import annotations

from moldiff.commands import TaskCommand, add_overrides
from .api import assimilate

__all__ = ["ASSIMILATE"]


def _arguments(a) -> None:
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
    add_overrides(a)
    a.add_argument("--no-progress", action="store_true")


def _run(args) -> int:
    x = assimilate(args.checkpoint, args.observations, n=args.num, length=args.length, method=args.method,
                   out=args.out, seed=args.seed, overrides=args.overrides, use_ema=not args.no_ema,
                   device=args.device, progress=not args.no_progress, pretrained=args.pretrained)
    print(f"wrote {x.shape[1]} posterior samples of {x.shape[0]} trajectories ({x.shape[2]} states each) to {args.out}")
    return 0


ASSIMILATE = TaskCommand(
    "assimilate", "posterior samples given observations (trajectory checkpoints)", _arguments, _run,
    description="Reconstruct trajectories from noisy observations with a trained trajectory prior. The observation "
                "operator and noise level are the checkpoint config's `observation` section (change them with "
                "--set observation.every=10 etc.).")
