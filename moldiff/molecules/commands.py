"""The commands the molecule tasks add to the CLI (see :mod:`moldiff.commands`):

* ``moldiff eval-molecules FILE.sdf|.xyz|.extxyz [--graph]`` or ``--dataset qm9 --split S``: EDM's molecule
  metrics (and the generated-graph protocol with ``--graph``) for a file or a QM9 split;
* ``moldiff qm9-property --generator CKPT --regressor CKPT``: EDM's property-conditioning protocol.

Nothing heavy is imported here: the parser is built on every ``moldiff`` call.
"""

from __future__ import annotations

from pathlib import Path

from ..commands import TaskCommand
from ..fileio import write_json
from ..fileio import check_output_path, write_output
from . import api
from .graph_mol import write_graph_sdf
from ..fileio import atomic_path

__all__ = ["EVAL_MOLECULES", "QM9_PROPERTY"]

MOLECULE_FILES = (".sdf", ".xyz", ".extxyz")


def _write_json(path: str | None, data: dict) -> None:
    if path is not None:
        write_json(path, data)


def _check_json(path: str | None) -> None:
    if path and Path(path).is_dir():
        raise ValueError(f"--json {path}: is a folder; give a file name")


def _eval_arguments(e) -> None:
    e.add_argument("file", nargs="?", default=None, metavar="FILE", help="an .sdf, .xyz or .extxyz file")
    e.add_argument("--graph", action="store_true",
                   help="FILE.sdf: score the file's own bonds and charges (generated-graph protocol) besides EDM's rule")
    e.add_argument("--dataset", default=None, choices=["qm9"], help="score a dataset split instead of a file")
    e.add_argument("--split", default="train", choices=["train", "valid", "test"])
    e.add_argument("--limit", type=int, default=None, help="with --dataset: only the split's first N molecules")
    e.add_argument("--no-novelty", action="store_true", help="skip novelty against QM9's training split")
    e.add_argument("--relax", nargs="?", const="mmff", default=None, choices=["mmff", "uff"],
                   help="with --graph: also score the molecules after an RDKit MMFF94 (or UFF) relaxation, side by side")
    e.add_argument("--relax-iters", type=int, default=200, metavar="N", help="at most N minimiser iterations (200)")
    e.add_argument("--relaxed-out", default=None, metavar="PATH.sdf", help="with --relax: write the relaxed molecules")
    e.add_argument("--json", default=None, metavar="PATH", help="also write the metrics as JSON")
    e.add_argument("--no-progress", action="store_true")


def _relax_run(args, progress: bool, novelty: bool) -> int:
    out = check_output_path(args.relaxed_out, (".sdf",), "relaxed molecules") if args.relaxed_out else None
    before, after, report, relaxed = api.relax_graph_file(args.file, method=args.relax, max_iters=args.relax_iters,
                                                          novelty=novelty, progress=progress)
    b, a = before.flat(), after.flat()
    keys = [k for k in ("graph/validity", "graph/valid_connected", "graph/mol_stability", "graph/atom_stability",
                        "edm/validity", "edm/mol_stability", "edm/atom_stability", "geom/geometry_ok",
                        "geom/bond_lengths_ok", "geom/bond_angles_ok", "geom/clash_rate", "geom/mmff_strain_median",
                        "dist/bond_length_w1", "dist/bond_angle_w1") if k in b or k in a]
    w = max(len(k) for k in keys)
    print(f"{'metric':<{w}}  {'generated':>10}  {'relaxed':>10}")
    for k in keys:
        print(f"{k:<{w}}  {b.get(k, float('nan')):>10.4f}  {a.get(k, float('nan')):>10.4f}")
    print(report.summary())
    if out is not None:
        write_output(out, lambda tmp: write_graph_sdf(tmp, relaxed))
    _write_json(args.json, {"generated": b, "relaxed": a, "relaxation": report.as_dict()})
    return 0


def _eval_run(args) -> int:
    _check_json(args.json)
    if (args.file is None) == (args.dataset is None):
        raise ValueError("give either a molecule file or --dataset")
    progress, novelty = not args.no_progress, not args.no_novelty
    if args.file is not None and Path(args.file).suffix.lower() not in MOLECULE_FILES:
        raise ValueError(f"{args.file}: unsupported file type {Path(args.file).suffix!r}; eval-molecules reads "
                         f"{', '.join(MOLECULE_FILES)}")
    if (args.relax is not None or args.relaxed_out) and not args.graph:
        raise ValueError("--relax and --relaxed-out need --graph (relaxation keeps the file's own bonds)")
    if args.relax_iters < 1:
        raise ValueError(f"--relax-iters must be >= 1, got {args.relax_iters}")
    if args.graph:
        if args.dataset:
            raise ValueError("--graph scores an .sdf file's own bonds; it does not apply to --dataset")
        if args.relax is not None:
            return _relax_run(args, progress, novelty)
        g = api.evaluate_graph_file(args.file, novelty=novelty, progress=progress)
        print(g.table())
        _write_json(args.json, {**g.flat(), "failures": g.failures})
        return 0
    if args.dataset:
        m = api.evaluate_dataset(args.dataset, args.split, limit=args.limit, novelty=novelty, progress=progress)
    else:
        m = api.evaluate_molecule_file(args.file, novelty=novelty, progress=progress)
    print(m.table())
    _write_json(args.json, m.as_dict())
    return 0


EVAL_MOLECULES = TaskCommand(
    "eval-molecules", "score a molecule file (.sdf/.xyz/.extxyz) or a QM9 split with EDM's metrics",
    _eval_arguments, _eval_run,
    description="FILE.sdf|.xyz|.extxyz: the EDM molecule metrics (bonds from distances). --graph: also the file's "
                "own bonds and charges (generated-graph protocol). --dataset qm9 --split S: the EDM metrics on the "
                "data itself (EDM's 'data' row).")


def _property_arguments(p) -> None:
    p.add_argument("--generator", required=True, metavar="CKPT", help="a qm9_flow checkpoint with condition.property")
    p.add_argument("--regressor", required=True, metavar="CKPT", help="a qm9_property checkpoint (the other half)")
    p.add_argument("-n", "--num", type=int, default=1000, help="molecules generated (default 1000)")
    p.add_argument("--reference", type=int, default=10000,
                   help="real molecules of the generator's half for the bounds (0: all; default 10000)")
    p.add_argument("--steps", type=int, default=None, help="generator NFE (default: its config's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the result as JSON")
    p.add_argument("--figure", default=None, metavar="PATH.png", help="requested vs predicted property, as a picture")
    p.add_argument("--no-progress", action="store_true")


def _property_run(args) -> int:
    _check_json(args.json)
    res = api.evaluate_property_conditioning(args.generator, args.regressor, n=args.num, n_reference=args.reference,
                                             steps=args.steps, seed=args.seed, device=args.device,
                                             progress=not args.no_progress)
    print(res.table())
    _write_json(args.json, res.as_dict())
    if args.figure:
        Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.figure, suffix=".png") as tmp:
            res.figure().savefig(tmp, dpi=120)
    return 0


QM9_PROPERTY = TaskCommand(
    "qm9-property", "EDM's property-conditioning protocol: a conditional generator judged by a regressor",
    _property_arguments, _property_run,
    description="Generates molecules for (atom count, property) pairs of the generator's training half and reports "
                "the regressor's MAE on them, beside its MAE on real molecules (lower bound), on shuffled "
                "properties (upper bound) and a predictor from the atom count alone (Hoogeboom et al. 2022, §5.2).")
