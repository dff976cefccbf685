"""Why the README main job's probability-flow samplers fling samples far out, and what fixes it (issue 27).

The README main job is ``configs/toy2d_vp.yaml`` (VP SDE, MLP 128 x 4, 6,000 steps).  Each variant changes one
thing -- the prediction kind, the training noise-level distribution, the ODE's end time, or all of EDM's
preconditioning -- and is trained once (seed 0); its probability-flow ODE (Euler and Heun, 250 steps) draws
2,000 samples for each of 3 sampling seeds.  Reported: samples beyond radius 6 (the 8 Gaussians lie within 4.3),
the largest radius, W2 to 2,000 held-out points with and without those samples, and the noise floor (W2 between
two held-out sets).

    python -m benchmarks.toy2d_ode_outliers [--variants base x0 ...] [--runs-root runs]

Results: ``benchmarks/results/toy2d_ode_outliers.md`` (+ ``.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch

import moldiff
from moldiff.metrics import wasserstein2
from benchmarks.harness import cpu_name

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "toy2d_ode_outliers"
RADIUS = 6.0
#: variant -> (what changes, overrides of configs/toy2d_vp.yaml)
VARIANTS = {
    "base": ("eps prediction, t ~ U[1e-3, 1] (the main job before)", []),
    "x0": ("x0 prediction", ["model.prediction=x0"]),
    "lognormal": ("eps prediction, EDM's log-normal noise levels", ["loss.time_distribution=lognormal"]),
    "t_min": ("eps prediction, training and ODE end at t = 1e-2", ["process.t_min=0.01"]),
    "edm": ("EDM preconditioning: x0 through c_skip / c_out, log-normal levels, 1 / c_out^2 weights",
            ["precond.kind=edm", "precond.sigma_data=2.0", "model.prediction=x0", "loss.time_distribution=lognormal",
             "loss.weighting=edm"]),
}
SAMPLERS = ("ode_euler", "ode_heun")


def run(variant: str, runs_root: str, seeds: int, n: int, steps: int) -> dict:
    label, extra = VARIANTS[variant]
    cfg = moldiff.load_config(ROOT / "configs" / "toy2d_vp.yaml", [
        f"runs_root={runs_root}", "tracking.experiment=toy2d-outliers", f"name=outliers_{variant}", "eval.samplers=[]",
        "eval.nll_points=0", *extra])
    t0 = time.time()
    res = moldiff.train(cfg, overwrite=True, progress=False)
    train_s = time.time() - t0
    task, model = moldiff.load_model(res.checkpoint, device="cpu")
    heldout = task.data("heldout", n)
    floor = wasserstein2(task.data("floor_a", n), task.data("floor_b", n))
    rows = []
    for name in SAMPLERS:
        sampler = dataclasses.replace(cfg.sampler, name=name, steps=steps)
        for seed in range(seeds):
            x = task.sample(model, n, generator=torch.Generator().manual_seed(seed), sampler=sampler, progress=False)
            r = x.norm(dim=1)
            far = r > RADIUS
            rows.append({"sampler": name, "seed": seed, "beyond": int(far.sum()), "max_radius": float(r.max()),
                         "w2": wasserstein2(x, heldout), "w2_without": wasserstein2(x[~far], heldout)})
            print(variant, rows[-1], flush=True)
    return {"variant": variant, "label": label, "overrides": extra, "floor": floor, "train_seconds": train_s,
            "rows": rows}




def write(recs: list[dict], steps: int) -> None:
    machine = f"{cpu_name()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}"
    OUT.with_suffix(".json").write_text(json.dumps({"machine": machine, "records": recs}, indent=1) + "\n")
    lines = ["# Probability-flow outliers on the README main job (toy2d_vp)", "",
             f"Measured by `python -m benchmarks.toy2d_ode_outliers` on this project's CPU machine ({machine}); "
             f"protocol in the script's docstring.  {steps} ODE steps; per cell: the 3 sampling seeds' values.", "",
             "| variant | change | sampler | beyond r = 6 | largest radius | W2 | W2 without them | worst W2 / floor |",
             "|---|---|---|---|---|---|---|---|"]
    for rec in recs:
        for s in SAMPLERS:
            rows = [r for r in rec["rows"] if r["sampler"] == s]
            worst = max(r["w2"] for r in rows) / rec["floor"]
            beyond = ", ".join(str(r["beyond"]) for r in rows)
            w2 = ", ".join(f"{r['w2']:.3f}" for r in rows)
            w2_without = ", ".join(f"{r['w2_without']:.3f}" for r in rows)
            radius = max(r["max_radius"] for r in rows)
            lines.append(f"| {rec['variant']} | {rec['label']} | {s} | {beyond} | {radius:.1f} | {w2} | {w2_without} | "
                         f"{worst:.2f} |")
    lines.append("")
    lines.append(f"Noise floor (W2 between two held-out sets of 2,000): {recs[0]['floor']:.3f}.")
    OUT.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--runs-root", default=str(ROOT / "runs"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=250)
    a = ap.parse_args()
    recs = []
    for v in a.variants:
        recs.append(run(v, a.runs_root, a.seeds, a.n, a.steps))
        write(recs, a.steps)


if __name__ == "__main__":
    main()
