"""Quality of the QM9 model lineage against its cumulative training compute (the shipped model's curve).

Each checkpoint of the lineage (a training checkpoint or a shipped file; its ``lineage`` record gives the cumulative
CPU-hours and GPU-minutes) is scored on fresh molecules with the EMA weights, both protocols, and the point is added
to ``benchmarks/results/qm9_lineage.json``; ``plot`` draws validity, molecule stability and geometry against
cumulative CPU-hours (``qm9_lineage.png``, also logged to MLflow) and writes the table ``qm9_lineage.md``.

    python -m benchmarks.qm9_lineage eval runs/qm9/lineage_a/checkpoints/step_00004000.pt -n 1000 --nfe 50
    python -m benchmarks.qm9_lineage plot
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
RESULTS = ROOT / "benchmarks" / "results"
RECORDS = RESULTS / "qm9_lineage.json"
KEYS = [("graph/validity", "valid"), ("graph/valid_connected", "valid & connected"), ("graph/mol_stability", "mol. stable"),
        ("graph/atom_stability", "atom stable"), ("edm/mol_stability", "EDM mol. stable"), ("edm/validity", "EDM valid"),
        ("geom/geometry_ok", "geometry ok")]


def _lineage(path: str) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {"step": int(state.get("step", 0)), **{k: v for k, v in state.get("lineage", {}).items()
                                                    if k in ("cpu_hours", "gpu_minutes", "samples_seen", "steps")}}


def evaluate(path: str, n: int, nfe: int, label: str, seed: int) -> dict:
    torch.set_num_threads(1)
    t0 = time.time()
    res = moldiff.evaluate(path, overrides=[f"eval.n_samples={n}", f"sampler.steps={nfe}", "eval.batch_size=250",
                                            "eval.mmff=100"], seed=seed, progress=False)
    rec = {"checkpoint": str(path), "label": label, "n": n, "nfe": nfe, "seed": seed, **_lineage(path),
           "metrics": res.metrics, "seconds": time.time() - t0, "machine": machine(), "date": time.strftime("%Y-%m-%d")}
    recs = json.loads(RECORDS.read_text()) if RECORDS.is_file() else []
    RECORDS.write_text(json.dumps(recs + [rec], indent=1) + "\n")
    return rec


def _se(p: float, n: int) -> float:
    return 100 * math.sqrt(max(p * (1 - p), 0.0) / n)


def plot(log: bool, runs_root: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = sorted(json.loads(RECORDS.read_text()), key=lambda r: (r.get("cpu_hours", 0), r["nfe"]))
    lines = ["# QM9 lineage: quality against cumulative training compute", "",
             "Made by `python -m benchmarks.qm9_lineage` (docstring).  Each row: one checkpoint of the shipped model's "
             "lineage scored on `n` fresh molecules (EMA weights, sizes from the training histogram); percentages "
             "± binomial standard error (molecule-level rates).  CPU-hours: process CPU time of the training loops "
             "on this project's 2-core CPU machine (one thread), cumulated over warm starts and resumes.", "",
             "| label | CPU-hours | GPU-min | steps | samples seen | NFE | n | " + " | ".join(h for _, h in KEYS) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(KEYS)]
    for r in recs:
        m = r["metrics"]
        cells = [f"{100 * m[k]:.1f}" + ("" if "atom" in k else f" ± {_se(m[k], r['n']):.1f}") if k in m else "-"
                 for k, _ in KEYS]
        lines.append(f"| {r['label']} | {r.get('cpu_hours', 0):.2f} | {r.get('gpu_minutes', 0):.1f} | "
                     f"{r.get('steps', r['step']):,} | {r.get('samples_seen', 0):,} | {r['nfe']} | {r['n']:,} | "
                     + " | ".join(cells) + " |")
    (RESULTS / "qm9_lineage.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for key, label in KEYS[:3] + KEYS[-1:]:
        pts = [(r.get("cpu_hours", 0), 100 * r["metrics"][key], _se(r["metrics"][key], r["n"])) for r in recs
               if r["nfe"] == 50 and key in r["metrics"]]
        if pts:
            x, y, e = zip(*pts)
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=label)
    ax.axhline(95, color="grey", ls=":", lw=1)
    ax.set_xlabel("cumulative training CPU-hours (1 thread)")
    ax.set_ylabel("% of 1,000 molecules (50 NFE)")
    ax.set_title("QM9 model lineage: quality against training compute")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(RESULTS / "qm9_lineage.png", dpi=110, bbox_inches="tight")
    if log:
        from moldiff.training.tracking import MLflowTracker

        tracker = MLflowTracker(runs_root, "qm9_lineage", run_name="lineage_curve")
        tracker.log_figure(fig, "qm9_lineage.png")
        tracker.log_text((RESULTS / "qm9_lineage.md").read_text(), "qm9_lineage.md")
        tracker.finish("FINISHED")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval")
    e.add_argument("checkpoints", nargs="+")
    e.add_argument("-n", type=int, default=1000)
    e.add_argument("--nfe", type=int, default=50)
    e.add_argument("--label", default="")
    e.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("plot")
    p.add_argument("--no-mlflow", action="store_true")
    p.add_argument("--runs-root", default="runs")
    a = ap.parse_args()
    if a.cmd == "eval":
        for path in a.checkpoints:
            rec = evaluate(path, a.n, a.nfe, a.label or Path(path).stem, a.seed)
            print(rec["label"], rec.get("cpu_hours"), {k: round(rec["metrics"][k], 4) for k, _ in KEYS
                                                       if k in rec["metrics"]}, flush=True)
    else:
        plot(not a.no_mlflow, a.runs_root)


if __name__ == "__main__":
    main()
