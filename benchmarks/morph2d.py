"""The 2D morphing benchmark of Tong et al. (2023): flow matching from 8 Gaussians to two moons with I-CFM,
OT-CFM and SB-CFM, and the W2 of the samples against the number of function evaluations (NFE).

    python -m benchmarks.morph2d [--steps 5000] [--out benchmarks/results/morph2d.md]

Trains ``configs/toy2d_morph_{icfm,otcfm,sbcfm}.yaml`` through the Python API (MLflow experiment
``toy2d-morph`` under ``runs/``), then for each model integrates 2,000 held-out source points with Euler at
1, 2, 4, 8, 16, 32, 64 and 128 steps (NFE = steps) and with adaptive RK45, and tabulates the exact W2
(POT ``ot.emd2``) to 2,000 held-out moons, beside the noise floor (W2 between two independent moon samples)
and the mean squared length of the straight source-to-sample displacement (how "straight" the learned
transport is: OT couplings shorten it).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from pathlib import Path

import torch

import moldiff
from moldiff.metrics import wasserstein2

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"icfm": "I-CFM", "otcfm": "OT-CFM", "sbcfm": "SB-CFM"}
EULER_STEPS = [1, 2, 4, 8, 16, 32, 64, 128]
N = 2000


def evaluate(task, model) -> dict[str, float]:
    """W2 to held-out moons per sampler setting, and the transport cost of the learned map."""
    moons = task.data("heldout", N)
    out: dict[str, float] = {"floor": wasserstein2(task.data("floor_a", N), task.data("floor_b", N))}
    for steps in EULER_STEPS:
        s = dataclasses.replace(task.cfg.sampler, name="ode_euler", steps=steps, denoise=False)
        x = task.sample(model, N, generator=torch.Generator().manual_seed(1), sampler=s, progress=False)
        out[f"euler{steps}"] = wasserstein2(x, moons)
    s = dataclasses.replace(task.cfg.sampler, name="ode_rk45", denoise=False)
    src = task.data("source_heldout", N)
    x = task.sample(model, N, generator=torch.Generator().manual_seed(1), sampler=s, progress=False)
    out["rk45"] = wasserstein2(x, moons)
    out["rk45_nfe"] = float(task.last_nfe)
    # the same generator draws the same source permutation in task.sample
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(1))[:N]
    out["cost"] = float(((x - src[perm]) ** 2).sum(1).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "morph2d.md"))
    ap.add_argument("--methods", nargs="*", default=list(METHODS))
    args = ap.parse_args()
    rows = []
    for m in args.methods:
        t0 = time.time()
        res = moldiff.train(ROOT / "configs" / f"toy2d_morph_{m}.yaml", [f"train.steps={args.steps}"], overwrite=True,
                            progress=False)
        train_s = time.time() - t0
        task, model = moldiff.load_model(res.checkpoint, device="cpu")
        w = evaluate(task, model)
        rows.append((m, w, train_s))
        print(m, {k: round(v, 4) for k, v in w.items()}, f"{train_s:.0f}s", flush=True)
        _write(args, rows)


def _write(args, rows) -> None:
    machine = f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    lines = [
        "# 8 Gaussians -> two moons: W2 against NFE",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {machine} by `python -m benchmarks.morph2d --steps {args.steps}`.",
        "Configs `configs/toy2d_morph_{icfm,otcfm,sbcfm}.yaml`: MLP 128 x 3 velocity net, batch 256, AdamW lr 1e-3, "
        f"EMA 0.999, {args.steps} steps; I-CFM and OT-CFM sigma = 0.1 (constant), SB-CFM Brownian-bridge sigma = 1 "
        "with Sinkhorn reg 2 sigma^2 = 2 on the unnormalised cost (torchcfm's settings).  W2: exact (POT), 2,000 samples "
        "from held-out source points against 2,000 held-out moons.  Euler NFE = steps; RK45 at rtol = atol = 1e-5.  "
        "cost: mean |x_sample - x_source|^2 of the learned map (lower = straighter transport).",
        "",
        "| method | " + " | ".join(f"Euler {s}" for s in EULER_STEPS) + " | RK45 (NFE) | noise floor | cost | train s |",
        "|---|" + "---|" * len(EULER_STEPS) + "---|---|---|---|",
    ]
    for m, w, sec in rows:
        cells = [f"{w[f'euler{s}']:.3f}" for s in EULER_STEPS]
        lines.append(f"| {METHODS[m]} | " + " | ".join(cells)
                     + f" | {w['rk45']:.3f} ({int(w['rk45_nfe'])}) | {w['floor']:.3f} | {w['cost']:.2f} | {sec:.0f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
