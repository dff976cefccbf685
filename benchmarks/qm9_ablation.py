"""Which recipe choices learn the most chemistry per CPU-minute on QM9 (the graph flow, `qm9_flow_cpu`).

Every case trains from step 0 (seed 0) for 15 process CPU-minutes (`train.max_cpu_minutes`, one torch thread, so
other jobs on the machine do not change the budget), is evaluated, then resumes for 45 more (exact resume: the
same run as 60 minutes straight) and is evaluated again.  Evaluation: 1,000 molecules at 50 NFE with the EMA
weights, both protocols (the generated graph and EDM's distance rule), standard errors from the binomial
(sampling) spread; `seed1` repeats the base recipe with another training seed, for the spread between runs.

    python -m benchmarks.qm9_ablation run base sc beta --minutes 15        # stage 1 of these cases
    python -m benchmarks.qm9_ablation run base --minutes 60                # stage 2 (resumes the 15-minute run)
    python -m benchmarks.qm9_ablation grid CHECKPOINT                      # sampling grid x NFE on one model
    python -m benchmarks.qm9_ablation collect                              # table + figure (+ MLflow)

Records: `benchmarks/results/qm9_ablation/<case>_<minutes>.json`; table `qm9_ablation.md`, figure
`qm9_ablation.png` (also logged to MLflow, experiment `qm9_ablation`).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from benchmarks.harness import machine

import moldiff

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "benchmarks" / "results" / "qm9_ablation"
TABLE = ROOT / "benchmarks" / "results" / "qm9_ablation.md"
FIGURE = ROOT / "benchmarks" / "results" / "qm9_ablation.png"
CONFIG = "qm9_flow_cpu"

#: case -> (what it changes, overrides of qm9_flow_cpu)
CASES: dict[str, tuple[str, list[str]]] = {
    "base": ("the shipped recipe: mask, t ~ U, weights 3/0.4/1/2, 6 x 128, lr 1e-3, batch 64", []),
    "seed1": ("base, training seed 1 (run-to-run spread)", ["seed=1"]),
    "sc": ("self-conditioning", ["flow.self_condition=true"]),
    "beta": ("t ~ Beta(1, 2) toward the data (SemlaFlow's Beta(2, 1))", ["loss.time_distribution=beta",
                                                                          "loss.beta_a=1", "loss.beta_b=2"]),
    "noise": ("coordinate noise 0.2 Å on the interpolant", ["flow.coord_noise=0.2"]),
    "uniform": ("uniform categorical source instead of mask", ["flow.categorical=uniform"]),
    "w_equal": ("loss weights 1/1/1/1", ["flow.w_pos=1", "flow.w_atoms=1", "flow.w_charges=1", "flow.w_bonds=1"]),
    "w_semla": ("loss weights 1/0.2/1/1 (SemlaFlow's coords/types/charges/bonds)",
                ["flow.w_pos=1", "flow.w_atoms=0.2", "flow.w_charges=1", "flow.w_bonds=1"]),
    "fake": ("fake atoms (FlowMol3): up to 20 % extra atoms the model may delete", ["flow.fake_atoms=0.2"]),
    "small": ("4 x 96, edge 24 (more steps per minute)", ["model.hidden=96", "model.layers=4", "model.edge=24"]),
    "deep": ("8 x 128", ["model.layers=8"]),
    "wide": ("6 x 192, edge 48", ["model.hidden=192", "model.edge=48"]),
    "lr5e-4": ("learning rate 5e-4", ["train.lr=5.0e-4"]),
    "lr2e-3": ("learning rate 2e-3", ["train.lr=2.0e-3"]),
    "bs32": ("batch 32", ["train.batch_size=32"]),
    "bs128": ("batch 128", ["train.batch_size=128"]),
}

#: (metric, header) columns of the table; rates get binomial standard errors
RATES = [("graph/validity", "valid"), ("graph/valid_connected", "valid & conn."), ("graph/mol_stability", "mol. stable"),
         ("graph/atom_stability", "atom stable"), ("edm/mol_stability", "EDM mol. stable"),
         ("edm/atom_stability", "EDM atom stable"), ("edm/validity", "EDM valid"), ("geom/geometry_ok", "geometry ok")]
EVAL = ["eval.n_samples=1000", "eval.batch_size=250", "sampler.steps=50", "eval.mmff=100", "eval.reference=2000"]


def _overrides(case: str, runs_root: str, extra: list[str]) -> list[str]:
    return [*CASES[case][1], f"name=ablation_{case}", f"runs_root={runs_root}", "tracking.experiment=qm9_ablation",
            "train.steps=10000000", "train.ckpt_every=250", "train.keep_checkpoints=2", *EVAL, *extra]


def _count(key: str, n: int = 1000) -> int | None:
    """Denominator of a molecule-level rate (``n`` molecules); None for atom-level rates, whose atoms are not
    independent draws (no binomial error)."""
    return None if "atom_stability" in key else n


def run(case: str, minutes: float, runs_root: str, extra: list[str]) -> dict:
    """Stage 1 (``minutes`` from step 0) or a later stage (resume the run up to ``minutes`` CPU-minutes in all)."""
    torch.set_num_threads(1)
    done = sorted((json.loads(p.read_text()) for p in RECORDS.glob(f"{case}_*.json")), key=lambda r: r["minutes"])
    done = [r for r in done if r["minutes"] < minutes]
    before = done[-1]["minutes"] if done else 0.0
    sets = [*_overrides(case, runs_root, extra), f"train.max_cpu_minutes={minutes - before}"]
    cfg = moldiff.load_config(CONFIG, sets)
    t0 = time.time()
    res = moldiff.train(cfg, resume="auto" if before else None, overwrite=not before, progress=False)
    params = sum(p.numel() for p in res.model.parameters())
    rec = {"case": case, "label": CASES[case][0], "minutes": minutes, "steps": res.step, "params": params,
           "batch_size": cfg.train.batch_size, "overrides": CASES[case][1], "metrics": res.metrics,
           "total_seconds": time.time() - t0, "machine": machine(), "date": time.strftime("%Y-%m-%d"),
           "run_id": res.run_id, "checkpoint": str(res.checkpoint)}
    RECORDS.mkdir(parents=True, exist_ok=True)
    (RECORDS / f"{case}_{minutes:g}.json").write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
    return rec


def grid(checkpoint: str, nfes: list[int], grids: list[str], n: int) -> None:
    """The sampling grid and NFE on one trained model (no training): one record per (grid, NFE)."""
    torch.set_num_threads(1)
    for g in grids:
        for nfe in nfes:
            t0 = time.time()
            res = moldiff.evaluate(checkpoint, overrides=[f"flow.time_grid={g}", f"sampler.steps={nfe}",
                                                          f"eval.n_samples={n}", "eval.batch_size=250",
                                                          "eval.mmff=100"], progress=False)
            rec = {"checkpoint": checkpoint, "grid": g, "nfe": nfe, "n": n, "metrics": res.metrics,
                   "seconds": time.time() - t0, "machine": machine(), "date": time.strftime("%Y-%m-%d")}
            RECORDS.mkdir(parents=True, exist_ok=True)
            (RECORDS / f"grid_{g}_{nfe}.json").write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
            print(g, nfe, {k: round(rec["metrics"][k], 4) for k, _ in RATES if k in rec["metrics"]}, flush=True)


def _cell(m: dict, key: str, n: int = 1000) -> str:
    if key not in m:
        return "-"
    p, n = m[key], _count(key, n)
    return f"{100 * p:.1f}" if n is None else f"{100 * p:.1f} ± {100 * math.sqrt(max(p * (1 - p), 0) / n):.1f}"


def collect(log: bool, runs_root: str = "runs") -> None:
    recs = [json.loads(p.read_text()) for p in sorted(RECORDS.glob("*.json")) if not p.name.startswith("grid_")]
    grids = [json.loads(p.read_text()) for p in sorted(RECORDS.glob("grid_*.json"))]
    order = {c: i for i, c in enumerate(CASES)}
    recs.sort(key=lambda r: (r["minutes"], order.get(r["case"], 99)))
    lines = ["# QM9 graph flow: recipe ablation at equal CPU-minutes", "",
             "Made by `python -m benchmarks.qm9_ablation` (its docstring has the protocol and commands).  Every case "
             "is `configs/qm9_flow_cpu.yaml` with the listed change, trained from step 0 for the given process "
             "CPU-minutes on one torch thread, then scored on 1,000 fresh molecules at 50 NFE (EMA weights; sizes from "
             "the training histogram).  Percentages ± the binomial standard error of the 1,000 samples (molecule-level rates); `seed1` shows "
             "the spread between two training runs of the same recipe.  'EDM' columns use EDM's "
             "distance rule on the same coordinates; 'geometry ok' is the share of molecules with all bond lengths and "
             "angles within the test split's range and no clash.", ""]
    head = "| case | change | CPU-min | steps | " + " | ".join(h for _, h in RATES) + " | machine |"
    lines += [head, "|---|---|---|---|" + "---|" * len(RATES) + "---|"]
    for r in recs:
        m = r["metrics"]
        lines.append(f"| {r['case']} | {r['label']} | {r['minutes']:g} | {r['steps']:,} | "
                     + " | ".join(_cell(m, k) for k, _ in RATES) + f" | {r['machine']} |")
    if grids:
        lines += ["", "## Sampling: time grid and NFE (one trained model, no retraining)", "",
                  f"Model: `{grids[0]['checkpoint']}`; {grids[0]['n']:,} molecules per row; seconds are wall time of "
                  "sampling + scoring on the shared machine.", "",
                  "| grid | NFE | " + " | ".join(h for _, h in RATES) + " | molecules/s |",
                  "|---|---|" + "---|" * len(RATES) + "---|"]
        for g in sorted(grids, key=lambda g: (g["grid"], g["nfe"])):
            m = g["metrics"]
            lines.append(f"| {g['grid']} | {g['nfe']} | " + " | ".join(_cell(m, k, g["n"]) for k, _ in RATES)
                         + f" | {m.get('molecules_per_second', float('nan')):.2f} |")
    lines += ["", "Overrides per case:", ""] + [f"- `{c}`: `{' '.join(o) or '(none)'}`" for c, (_, o) in CASES.items()]
    TABLE.write_text("\n".join(lines) + "\n")
    fig = figure(recs)
    if fig is not None:
        fig.savefig(FIGURE, dpi=110, bbox_inches="tight")
        if log:
            from moldiff.training.tracking import MLflowTracker

            tracker = MLflowTracker(runs_root, "qm9_ablation", run_name="ablation_table")
            tracker.log_figure(fig, "qm9_ablation.png")
            tracker.log_text(TABLE.read_text(), "qm9_ablation.md")
            tracker.finish("FINISHED")


def figure(recs: list[dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not recs:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, (key, title) in zip(axes, [("graph/validity", "generated-graph validity"),
                                        ("graph/mol_stability", "generated-graph molecule stability"),
                                        ("edm/atom_stability", "EDM-rule atom stability")]):
        for case in CASES:
            pts = sorted((r["minutes"], r["metrics"][key]) for r in recs if r["case"] == case and key in r["metrics"])
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, [100 * y for y in ys], "o-", label=case)
        ax.set_xlabel("training CPU-minutes")
        ax.set_ylabel("%")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, ncol=2)
    fig.suptitle("QM9 graph flow: recipe ablation (1,000 molecules at 50 NFE each)")
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("cases", nargs="+", choices=list(CASES))
    r.add_argument("--minutes", type=float, default=15.0)
    r.add_argument("--runs-root", default="runs")
    r.add_argument("--set", dest="extra", action="append", default=[])
    g = sub.add_parser("grid")
    g.add_argument("checkpoint")
    g.add_argument("--nfe", type=int, nargs="+", default=[10, 20, 50, 100])
    g.add_argument("--grids", nargs="+", default=["uniform", "cosine", "quadratic"])
    g.add_argument("-n", type=int, default=1000)
    c = sub.add_parser("collect")
    c.add_argument("--no-mlflow", action="store_true")
    c.add_argument("--runs-root", default="runs")
    args = ap.parse_args()
    if args.cmd == "run":
        for case in args.cases:
            rec = run(case, args.minutes, args.runs_root, args.extra)
            print(case, args.minutes, rec["steps"], "steps",
                  {k: round(rec["metrics"][k], 4) for k, _ in RATES if k in rec["metrics"]}, flush=True)
            collect(log=False)
    elif args.cmd == "grid":
        grid(args.checkpoint, args.nfe, args.grids, args.n)
        collect(log=False)
    else:
        collect(log=not args.no_mlflow, runs_root=args.runs_root)


if __name__ == "__main__":
    main()
