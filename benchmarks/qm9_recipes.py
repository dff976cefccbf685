"""Chemistry per CPU-minute: EDM's recipe (configs/qm9_edm_cpu.yaml) against the graph flow-matching recipe
(configs/qm9_flow_cpu.yaml), trained side by side for the same wall-clock time on this machine, their
checkpoints scored at several training minutes and NFE with both protocols.

    # train both at once, one thread each (the same budget for both), checkpoints every few minutes:
    OMP_NUM_THREADS=1 moldiff train configs/qm9_flow_cpu.yaml --set runs_root=R --set train.ckpt_every=250 &
    OMP_NUM_THREADS=1 moldiff train configs/qm9_edm_cpu.yaml --set runs_root=R --set train.steps=12000 \\
        --set train.eval_every=0 --set eval.n_samples=0 --set train.keep_checkpoints=40 &
    # score one checkpoint (several of these can run side by side):
    python -m benchmarks.qm9_recipes eval --recipe flow --checkpoint R/qm9/qm9_flow_cpu/checkpoints/step_00001000.pt \\
        --start START_EPOCH --nfe 50 -n 1000
    python -m benchmarks.qm9_recipes collect          # table, figure (and an MLflow run with the figure)

Minutes are the checkpoint file's modification time minus ``--start`` (the epoch second both trainings were
launched): wall-clock minutes of training on the shared 2-core machine.  Each record lands in
``benchmarks/results/qm9_recipes/*.json``; ``collect`` writes ``benchmarks/results/qm9_recipes.md`` and
``qm9_recipes.png``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from benchmarks.harness import machine

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "qm9_recipes"
TABLE = ROOT / "benchmarks" / "results" / "qm9_recipes.md"
FIGURE = ROOT / "benchmarks" / "results" / "qm9_recipes.png"




def evaluate(recipe: str, checkpoint: Path, start: float | None, nfe: int, n: int, seed: int, mmff: int,
             grid: str = "uniform", eta: float = 0.0) -> dict:
    import moldiff
    from moldiff.config import SamplerConfig
    from moldiff.molecules.evaluate import evaluate_molecules

    task, model = moldiff.load_model(checkpoint, device="cpu")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    minutes = None if start is None else (checkpoint.stat().st_mtime - start) / 60
    gen = torch.Generator().manual_seed(seed)
    edm_ref = task.qm9.pipeline_smiles("train", progress=False)
    t0 = time.time()
    if recipe == "flow":
        from moldiff.molecules.graph_metrics import evaluate_graphs

        sampler = SamplerConfig(name="ode_euler", steps=nfe)
        task.cfg.eval.batch_size = 100
        task.cfg.flow.time_grid = grid
        task.cfg.flow.eta = eta
        with torch.no_grad():
            mols = task.sample(model, n, generator=gen, sampler=sampler, progress=False)
        seconds = time.time() - t0
        res = evaluate_graphs(mols, reference=task.reference(), training_smiles=task.training_smiles(),
                              edm=True, edm_reference=edm_ref, mmff=mmff)
        metrics, failures = res.flat(), res.failures
    else:
        sampler = SamplerConfig(name="ancestral", steps=nfe)
        task.cfg.eval.batch_size = 100
        with torch.no_grad():
            mols = task.sample(model, n, generator=gen, sampler=sampler, progress=False)
        seconds = time.time() - t0
        res = evaluate_molecules(mols, reference_smiles=edm_ref)
        metrics = {f"edm/{k}": float(v) for k, v in res.as_dict().items() if isinstance(v, (int, float))}
        failures = res.failures
    rec = {"recipe": recipe, "checkpoint": str(checkpoint), "step": int(state["step"]), "minutes": minutes,
           "nfe": nfe, "n": n, "seed": seed, "grid": grid if recipe == "flow" else "ddpm levels",
           "categorical": getattr(getattr(task.cfg, "flow", None), "categorical", None), "eta": eta, "sample_seconds": seconds, "metrics": metrics, "failures": failures,
           "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"),
           "model": f"{type(model).__name__}, {sum(p.numel() for p in model.parameters()):,} parameters"}
    OUT.mkdir(parents=True, exist_ok=True)
    tag = ("" if grid == "uniform" else f"_{grid}") + ("" if not eta else f"_eta{eta:g}")
    cat = rec["categorical"]
    name = recipe if cat in (None, "mask") else f"{recipe}-{cat}"
    (OUT / f"{name}_step{rec['step']:06d}_nfe{nfe:04d}_n{n}{tag}.json").write_text(json.dumps(rec, indent=1, sort_keys=True))
    return rec


def label(r: dict) -> str:
    """``flow``, ``flow (uniform)``, ``flow (cosine grid)``, ``edm``."""
    extra = [x for x in (r.get("categorical") if r.get("categorical") not in (None, "mask") else None,
                         f"{r['grid']} grid" if r.get("grid") not in (None, "uniform", "ddpm levels") else None,
                         f"eta {r['eta']:g}" if r.get("eta") else None) if x]
    return r["recipe"] + (f" ({', '.join(extra)})" if extra else "")


def _pct(m: dict, k: str) -> str:
    v = m.get(k)
    return "-" if v is None else f"{100 * v:.1f}"


def collect(log_mlflow: str | None) -> None:
    recs = [json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))]
    recs.sort(key=lambda r: (r["recipe"], r["step"], r["nfe"]))
    head = ("| recipe | step | minutes | NFE | n | graph: mol. stable | graph: atom stable | graph: valid | "
            "graph: valid & connected | graph: unique | graph: novel | EDM rule: mol. stable | EDM rule: atom stable | "
            "EDM rule: valid | EDM rule: V x U | sampling s |")
    lines = ["# QM9: chemistry per CPU-minute, EDM's recipe vs graph flow matching", "",
             "Made by `python -m benchmarks.qm9_recipes` (see its docstring for the exact commands).  Both recipes "
             "were trained at the same time on this project's CPU machine, one torch thread each, sharing its two "
             "cores with each other and with development work; `minutes` is wall-clock training time.  Every row "
             "scores `n` fresh samples (sizes from the training histogram).  'graph' = the generated-graph protocol "
             "(the model's own bonds and formal charges; `moldiff/molecules/graph_metrics.py`); 'EDM rule' = EDM's "
             "distance-based protocol on the same coordinates (`moldiff/molecules/evaluate.py`).  EDM's recipe "
             "generates no bonds, so only its EDM-rule columns exist.  Percentages.", "",
             head, "|" + "---|" * (head.count("|") - 1)]
    for r in recs:
        m = r["metrics"]
        mins = "-" if r["minutes"] is None else f"{r['minutes']:.0f}"
        lines.append(
            f"| {label(r)} | {r['step']} | {mins} | {r['nfe']} | {r['n']} | {_pct(m, 'graph/mol_stability')} | "
            f"{_pct(m, 'graph/atom_stability')} | {_pct(m, 'graph/validity')} | {_pct(m, 'graph/valid_connected')} | "
            f"{_pct(m, 'graph/uniqueness')} | {_pct(m, 'graph/novelty')} | {_pct(m, 'edm/mol_stability')} | "
            f"{_pct(m, 'edm/atom_stability')} | {_pct(m, 'edm/validity')} | {_pct(m, 'edm/valid_and_unique')} | "
            f"{r['sample_seconds']:.0f} |")
    flows = [r for r in recs if r["recipe"] == "flow"]
    if flows:
        lines += ["", "Distribution distances to the test split and geometry (flow rows):", "",
                  "| recipe | step | NFE | atom TV | bond TV | bond length W1 (Å) | bond angle W1 (°) | bond lengths ok | "
                  "angles ok | clash rate | MMFF strain median (kcal/mol) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in flows:
            m = r["metrics"]
            g = lambda k, f="{:.3f}": "-" if k not in m else f.format(m[k])  # noqa: E731
            lines.append(f"| {label(r)} | {r['step']} | {r['nfe']} | {g('dist/atom_tv')} | {g('dist/bond_tv')} | "
                         f"{g('dist/bond_length_w1')} | {g('dist/bond_angle_w1', '{:.2f}')} | {_pct(m, 'geom/bond_lengths_ok')} | "
                         f"{_pct(m, 'geom/bond_angles_ok')} | {_pct(m, 'geom/clash_rate')} | {g('geom/mmff_strain_median', '{:.1f}')} |")
    machines = sorted({r["machine"] for r in recs})
    lines += ["", "Machine: " + "; ".join(machines) + ".", ""]
    TABLE.write_text("\n".join(lines) + "\n")
    fig = figure(recs)
    fig.savefig(FIGURE, dpi=110)
    if log_mlflow:
        from moldiff.training.tracking import MLflowTracker

        tr = MLflowTracker(log_mlflow, "qm9-benchmark", "chemistry per CPU-minute")
        tr.log_figure(fig, "qm9_recipes.png")
        tr.log_artifact(TABLE)
        tr.finish()


def figure(recs: list[dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    styles = {("flow", "graph/mol_stability"): ("C0", "-", "flow: mol. stable (graph)"),
              ("flow", "graph/validity"): ("C0", "--", "flow: valid (graph)"),
              ("flow", "edm/mol_stability"): ("C2", "-", "flow: mol. stable (EDM rule)"),
              ("edm", "edm/mol_stability"): ("C3", "-", "EDM: mol. stable (EDM rule)"),
              ("edm", "edm/validity"): ("C3", "--", "EDM: valid (EDM rule)")}
    for (recipe, key), (c, ls, name) in styles.items():
        rs = [r for r in recs if label(r) == recipe and key in r["metrics"]]
        if not rs:
            continue
        ref_nfe = 50 if recipe == "flow" else max(r["nfe"] for r in rs if r["minutes"] is not None) if any(
            r["minutes"] is not None for r in rs) else rs[0]["nfe"]
        by_min = sorted((r["minutes"], r["metrics"][key]) for r in rs if r["nfe"] == ref_nfe and r["minutes"] is not None)
        if by_min:
            axes[0].plot(*zip(*by_min), color=c, ls=ls, marker="o", label=f"{name}, {ref_nfe} NFE")
        last = max(r["step"] for r in rs)
        by_nfe = sorted((r["nfe"], r["metrics"][key]) for r in rs if r["step"] == last)
        if by_nfe:
            axes[1].plot(*zip(*by_nfe), color=c, ls=ls, marker="o", label=f"{name}, step {last}")
    axes[0].set_xlabel("training wall-clock minutes (1 thread, shared 2-core CPU)")
    axes[1].set_xlabel("network evaluations per sample (NFE)")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.set_ylabel("fraction of molecules")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("QM9 on a CPU: graph flow matching vs EDM's recipe")
    fig.tight_layout()
    return fig


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval")
    e.add_argument("--recipe", choices=["flow", "edm"], required=True)
    e.add_argument("--checkpoint", type=Path, required=True)
    e.add_argument("--start", type=float, default=None, help="epoch second the training was launched")
    e.add_argument("--nfe", type=int, nargs="+", default=[50])
    e.add_argument("-n", type=int, default=1000)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--mmff", type=int, default=200)
    e.add_argument("--time-grid", default="uniform", choices=["uniform", "cosine"], help="flow: sampling time grid")
    e.add_argument("--eta", type=float, default=0.0, help="flow: re-masking stochasticity of the token chains")
    c = sub.add_parser("collect")
    c.add_argument("--mlflow", default=None, metavar="RUNS_ROOT", help="also log the figure to this MLflow store")
    args = ap.parse_args()
    if args.cmd == "eval":
        for nfe in args.nfe:
            rec = evaluate(args.recipe, args.checkpoint, args.start, nfe, args.n, args.seed, args.mmff, args.time_grid, args.eta)
            m = rec["metrics"]
            print(args.recipe, rec["step"], nfe, {k: round(v, 4) for k, v in m.items()
                                                 if k.split("/")[-1] in ("mol_stability", "validity", "atom_stability")},
                  f"{rec['sample_seconds']:.0f}s", flush=True)
    else:
        collect(args.mlflow)


if __name__ == "__main__":
    main()
