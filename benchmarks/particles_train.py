"""Train and evaluate the particle methods (I-CFM, OT-CFM, eq-OT-CFM, SB-CFM, VP and VE score-SDE) on DW4 /
LJ13 / LJ55 and tabulate method x system: energy W1 / W2, distance TV, NLL, ESS, NFE, wall time, machine.

    python -m benchmarks.particles_train --system dw4 --methods icfm otcfm --steps 3000 [--set KEY=VALUE ...]
    python -m benchmarks.particles_train --collect          # rebuild the table from the saved runs

Each run trains ``configs/<system>_<method>.yaml`` (with the given overrides) through the Python API, is an
MLflow run (experiment ``particles-benchmark``), and leaves its metrics in
``benchmarks/results/particles/<system>_<method>.json``; ``--collect`` (run after every training run too)
writes ``benchmarks/results/particles.md``.  Several invocations may run side by side (one per core).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import moldiff
from benchmarks.harness import machine

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "results" / "particles"
TABLE = ROOT / "benchmarks" / "results" / "particles.md"
METHODS = {"icfm": "I-CFM", "otcfm": "OT-CFM", "eqotcfm": "eq-OT-CFM", "sbcfm": "SB-CFM", "vp": "VP score-SDE",
           "ve": "VE score-SDE"}




def run(system: str, method: str, steps: int, overrides: list[str], tag: str = "") -> dict:
    suffix = f"_{tag}" if tag else ""
    sets = [f"train.steps={steps}", f"name={system}_{method}{suffix}", "tracking.experiment=particles-benchmark",
            *overrides]
    cfg = moldiff.load_config(ROOT / "configs" / f"{system}_{method}.yaml", sets)
    t0 = time.time()
    res = moldiff.train(cfg, overwrite=True, progress=False)  # a measurement starts from step 0
    total = time.time() - t0
    rec = {"system": cfg.data.system, "method": method, "steps": res.step, "train_seconds": res.seconds,
           "total_seconds": total, "metrics": res.metrics, "overrides": sets, "machine": machine(),
           "batch_size": cfg.train.batch_size, "model": f"EGNN {cfg.model.layers} x {cfg.model.hidden}",
           "sampler": f"{cfg.sampler.name} {cfg.sampler.steps}", "date": time.strftime("%Y-%m-%d"),
           "run_id": res.run_id, "tag": tag}
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / f"{cfg.data.system}_{method}{suffix}.json").write_text(json.dumps(rec, indent=1, sort_keys=True))
    return rec


def evaluate_only(system: str, method: str, overrides: list[str], tag: str = "") -> dict:
    """Re-evaluate a finished run's checkpoint with other evaluation settings (e.g. a cheaper ESS pass)."""
    suffix = f"_{tag}" if tag else ""
    cfg = moldiff.load_config(ROOT / "configs" / f"{system}_{method}.yaml", overrides)
    ckpt = Path(cfg.runs_root) / "particles-benchmark" / f"{system}_{method}{suffix}" / "checkpoints" / "last.pt"
    task, _ = moldiff.load_model(ckpt, overrides=overrides, device="cpu")
    t0 = time.time()
    res = moldiff.evaluate(ckpt, overrides=overrides, device="cpu", progress=False)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    rec = {"system": task.cfg.data.system, "method": method, "steps": state["step"], "train_seconds": float("nan"),
           "total_seconds": float("nan"), "metrics": res.metrics, "overrides": ["(re-evaluated)", *overrides],
           "machine": machine(), "batch_size": task.cfg.train.batch_size,
           "model": f"EGNN {task.cfg.model.layers} x {task.cfg.model.hidden}",
           "sampler": f"{task.cfg.sampler.name} {task.cfg.sampler.steps}", "date": time.strftime("%Y-%m-%d"),
           "run_id": None, "tag": tag, "eval_seconds": time.time() - t0}
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / f"{task.cfg.data.system}_{method}{suffix}.json").write_text(json.dumps(rec, indent=1, sort_keys=True))
    return rec


def collect() -> None:
    recs = [json.loads(p.read_text()) for p in sorted(RUNS.glob("*.json"))]
    order = {m: i for i, m in enumerate(METHODS)}
    recs.sort(key=lambda r: (r["system"], order[r["method"]], r["steps"]))
    lines = [
        "# Particle systems: method x system",
        "",
        "Made by `python -m benchmarks.particles_train` (each row: one training run of `configs/<system>_<method>.yaml` "
        "with the overrides listed below, then the task's evaluation).  Metrics against the project's MCMC test split "
        "(`physics/particles/reference.py`): energy-histogram W1 / W2 (exact 1D, non-finite energies dropped and "
        "counted), interatomic-distance-histogram TV (100 bins), NLL = mean -log q of held-out test configurations "
        "(nats, zero-CoM subspace, probability-flow ODE with the exact divergence), ESS = Kish effective sample size "
        "/ n of the model samples importance-reweighted to exp(-E) (log q from the same ODE pass, exact divergence), "
        "NFE = network evaluations per sample.  train s: optimisation (wall, incl. data pairing); eval s: "
        "sampling with log q, and the NLL.  Each run shared the 2 cores with one or two other jobs.",
        "",
        "| system | method | steps | batch | energy W1 | energy W2 | distance TV | NLL | ESS | NFE | train s | eval s | machine |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in recs:
        m = r["metrics"]

        def f(key, fmt="{:.3f}"):
            v = m.get(key)
            return "-" if v is None else fmt.format(v)

        # the trainer's wall time includes the final evaluation: sampling (+ the ESS pass) and the NLL
        ev = sum(m.get(k, 0.0) for k in ("sample_seconds", "ess_seconds", "nll_seconds"))

        lines.append(f"| {r['system']} | {METHODS[r['method']]} | {r['steps']} | {r['batch_size']} | {f('energy/w1')} | "
                     f"{f('energy/w2')} | {f('distance/tv')} | {f('nll')} | {f('ess', '{:.4f}')} | {f('nfe', '{:.0f}')} | "
                     f"{r['train_seconds'] - ev:.0f} | {ev:.0f} | {r['machine']} |".replace("| nan |", "| - |"))
    lines += ["", "Overrides and settings per run:", ""]
    for r in recs:
        lines.append(f"- {r['system']} {r['method']} ({r['date']}, {r['model']}, sampler {r['sampler']}): "
                     f"`{' '.join(r['overrides'])}`; mean energy model {r['metrics'].get('energy/mean_model', float('nan')):.3f} "
                     f"vs reference {r['metrics'].get('energy/mean_reference', float('nan')):.3f}; "
                     f"non-finite fraction {r['metrics'].get('frac_nonfinite', 0):.4f}")
    TABLE.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--system", default="dw4", choices=["dw4", "lj13", "lj55"])
    ap.add_argument("--methods", nargs="*", default=list(METHODS))
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--tag", default="", help="suffix of the run name and results file (e.g. long)")
    ap.add_argument("--collect", action="store_true", help="only rebuild the table")
    ap.add_argument("--eval-only", action="store_true", help="re-evaluate the finished runs' checkpoints")
    args = ap.parse_args()
    if args.eval_only:
        for method in args.methods:
            rec = evaluate_only(args.system, method, args.overrides, args.tag)
            print(args.system, method, {k: round(v, 4) for k, v in rec["metrics"].items()}, flush=True)
            collect()
    elif not args.collect:
        for method in args.methods:
            rec = run(args.system, method, args.steps, args.overrides, args.tag)
            print(args.system, method, {k: round(v, 4) for k, v in rec["metrics"].items()}, flush=True)
            collect()
    collect()


if __name__ == "__main__":
    main()
