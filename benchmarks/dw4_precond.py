"""EDM's preconditioning and sampler against the plain eps-model on the DW4 VP score-SDE job: energy W2,
interatomic-distance W2 and outlier count against NFE, before (eps prediction, uniform times) and after (EDM:
x0 through c_skip / c_out, log-normal noise levels, lambda = 1 / c_out^2), for the probability-flow ODE samplers
and EDM's Heun sampler with and without churn.

    python -m benchmarks.dw4_precond [--steps 3000] [--seeds 2] [--nfe 20 50 100 200] [--n 2000]
    python -m benchmarks.dw4_precond --steps 20 --seeds 1 --nfe 4 --n 50 --runs-root /tmp/r --out /tmp/dw4  # smoke

Both models train with ``configs/dw4_vp.yaml`` (EGNN 3 x 64, batch 128, VP beta 0.1..20, the project's MCMC train
split) for ``--steps`` steps -- the same network, data, optimiser and steps; only the parameterisation and the
training noise levels differ.  "after" adds ``precond.kind=edm precond.sigma_data=<std of one training coordinate>
model.prediction=x0 loss.time_distribution=lognormal loss.weighting=edm`` and ``model.input_scaling=false`` (the
particles task refuses EDM preconditioning with its own input scaling: c_in takes its place; "before" keeps that
input scaling, x / sqrt(alpha^2 sigma_data^2 + sigma_t^2), with the same sigma_data).  Training resumes the run
folders' last checkpoints (``resume="auto"``): rerunning the script continues or reuses the models.

Each evaluation draws ``--n`` configurations (``task.sample`` with the config's sampler replaced by the one
measured, seeds 0 .. seeds-1 through ``torch.Generator``) against ``eval.n_reference`` (10,000) configurations
of the MCMC test split: energy W2 (exact 1D, ``physics.particles.metrics.energy_wasserstein``; non-finite
energies dropped), interatomic-distance W2 (the same exact 1D W2 on all pair distances pooled over
configurations, ``interatomic_distances``), and outliers: samples whose energy is above the highest energy of
the reference set, or non-finite.  Floor: the same W2s of ``--n`` configurations of the MCMC *train* split
against the same reference (the finite-sample noise of a perfect sampler).
Results: ``benchmarks/results/dw4_precond.md`` (+ ``.json``; ``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

import moldiff
from moldiff.tasks import get_task
from moldiff.training.checkpoint import latest_checkpoint

from physics.particles.metrics import energy_wasserstein, interatomic_distances

from benchmarks.harness import ROOT, machine
from benchmarks.toy2d_precond import SAMPLERS  # the same samplers as the toy 2D table

OUT = ROOT / "benchmarks" / "results" / "dw4_precond"
EDM = ["precond.kind=edm", "precond.sigma_data={sigma_data}", "model.prediction=x0", "model.input_scaling=false",
       "loss.time_distribution=lognormal", "loss.weighting=edm"]
VARIANTS = {"eps (before)": ("eps", []), "EDM precond (after)": ("edm", EDM)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3000, help="training steps of each model")
    ap.add_argument("--seeds", type=int, default=2, help="independent sampling seeds (error bars)")
    ap.add_argument("--nfe", type=int, nargs="*", default=[20, 50, 100, 200])
    ap.add_argument("--n", type=int, default=2000, help="configurations drawn per evaluation")
    ap.add_argument("--runs-root", default=str(ROOT / "runs"))
    ap.add_argument("--device", default="auto", help="training and sampling device (auto | cpu | cuda)")
    ap.add_argument("--out", default=str(OUT), help="results path without suffix (.md and .json are written)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override for both models")
    a = ap.parse_args()
    out = Path(a.out)
    out = out.with_suffix("") if out.suffix in (".md", ".json") else out
    out.parent.mkdir(parents=True, exist_ok=True)
    common = [f"train.steps={a.steps}", f"train.device={a.device}", f"runs_root={a.runs_root}",
              "tracking.experiment=dw4-precond", "eval.n_samples=0", "eval.nll_points=0"]

    base = moldiff.load_config(ROOT / "configs" / "dw4_vp.yaml", [*common, *a.overrides])
    task = get_task(base.task)(base)
    sigma_data = f"{task.sigma_data:.4f}"  # std of one training coordinate (zero-CoM positions)
    ref = task.reference("test", base.eval.n_reference, progress=False)
    e_ref = task.system.energy(ref.double())
    d_ref = interatomic_distances(ref).reshape(-1)
    e_max = float(e_ref.max())
    floor_x = task.reference("train", a.n, progress=False)
    floor = {"energy_w2": energy_wasserstein(task.system.energy(floor_x.double()), e_ref, 2),
             "distance_w2": energy_wasserstein(interatomic_distances(floor_x).reshape(-1), d_ref, 2),
             "outliers": _outliers(task.system.energy(floor_x.double()), e_max)}
    info = {"sigma_data": float(sigma_data), "n_reference": len(ref), "e_ref_max": e_max,
            "e_ref_mean": float(e_ref.mean()), "floor": floor, "models": {}}
    print(f"sigma_data {sigma_data}, reference {len(ref)} configurations (max energy {e_max:.3f}), floor {floor}",
          flush=True)

    rows = []
    for variant, (name, extra) in VARIANTS.items():
        cfg = moldiff.load_config(ROOT / "configs" / "dw4_vp.yaml", [
            *common, f"name={name}",
            *[e.format(sigma_data=sigma_data) for e in extra], *a.overrides])
        res, train = _train(cfg)
        info["models"][variant] = {"overrides": [e.format(sigma_data=sigma_data) for e in extra], **train,
                                   "checkpoint": str(res.checkpoint)}
        print(variant, train, flush=True)
        task, model = moldiff.load_model(res.checkpoint, device=a.device)
        device = next(model.parameters()).device
        for label, settings, per_step in SAMPLERS:
            for nfe in a.nfe:
                steps = max(1, nfe // per_step)
                sampler = dataclasses.replace(cfg.sampler, steps=steps, **settings)
                ew2s, dw2s, outs, secs = [], [], [], []
                for seed in range(a.seeds):
                    t0 = time.time()
                    x = task.sample(model, a.n, generator=torch.Generator(device=device).manual_seed(seed),
                                    sampler=sampler, progress=False).cpu()
                    secs.append(time.time() - t0)
                    e = task.system.energy(x.double())
                    ew2s.append(energy_wasserstein(e, e_ref, 2))
                    dw2s.append(energy_wasserstein(interatomic_distances(x).reshape(-1), d_ref, 2))
                    outs.append(_outliers(e, e_max))
                rows.append({"variant": variant, "sampler": label, "steps": steps, "nfe": task.last_nfe,
                             "energy_w2": ew2s, "distance_w2": dw2s, "outliers": outs, "sample_seconds": secs})
                print(variant, label, task.last_nfe, [round(w, 3) for w in ew2s], [round(w, 4) for w in dw2s], outs,
                      flush=True)
                _write(a, out, info, rows)
    _write(a, out, info, rows)


def _outliers(e: torch.Tensor, e_max: float) -> int:
    """Samples with energy above ``e_max`` or non-finite."""
    return int((~(e <= e_max)).sum())


def _train(cfg) -> tuple:
    """``moldiff.train(cfg, resume="auto")``, and the training wall time summed over the segments this script
    ran (``train_seconds.json`` in the run folder, keyed by the step each segment ended at)."""
    ckpt_dir, log = cfg.run_dir / "checkpoints", cfg.run_dir / "train_seconds.json"
    found = latest_checkpoint(ckpt_dir)
    start = int(found[1]["step"]) if found else 0
    past = json.loads(log.read_text()) if start and log.is_file() else {}
    before = past.get(str(start), {"seconds": 0.0, "complete": start == 0})
    t0 = time.time()
    try:
        res = moldiff.train(cfg, resume="auto", progress=False)
    finally:  # an interrupted segment still counts up to its last checkpoint
        found = latest_checkpoint(ckpt_dir)
        end = int(found[1]["step"]) if found else 0
        if end > start:
            past[str(end)] = {"seconds": before["seconds"] + time.time() - t0, "complete": before["complete"]}
            log.write_text(json.dumps(past, indent=1))
    rec = past.get(str(res.step), before)
    return res, {"steps": res.step, "resumed_from": start, "train_seconds": rec["seconds"],
                 "train_seconds_complete": rec["complete"]}




def _mean_std(v: list[float], digits: int) -> str:
    w = torch.tensor(v, dtype=torch.float64)
    fmt = f".{digits}f" if abs(w.mean().item()) < 1e4 else ".3g"  # a diverged sampler's W2 in scientific form
    spread = f" ± {w.std().item():{fmt}}" if len(w) > 1 else ""
    return f"{w.mean().item():{fmt}}{spread}"


def _write(a, out: Path, info: dict, rows: list) -> None:
    machine = machine(a.device)
    command = "python " + shlex.join(["benchmarks/dw4_precond.py", *sys.argv[1:]])
    out.with_suffix(".json").write_text(json.dumps({"machine": machine, "command": command, "args": vars(a),
                                                    **info, "rows": rows}, indent=1))
    fl = info["floor"]
    lines = ["# EDM preconditioning and sampler on the DW4 VP score-SDE job: energy / distance W2 and outliers "
             "against NFE", "",
             f"Measured by `{command}` on {machine}; protocol in the script's docstring.  sigma_data "
             f"{info['sigma_data']} (std of one training coordinate).  Reference: {info['n_reference']:,} "
             f"configurations of the MCMC test split (max energy {info['e_ref_max']:.3f}, mean "
             f"{info['e_ref_mean']:.3f}).  W2: mean ± std over seeds ({a.n:,} samples each); energy W2 over the "
             "finite energies, distance W2 over all interatomic distances pooled.  Outliers: samples whose energy "
             "is above the maximum energy of the reference set, or non-finite, per seed.  Floor "
             f"({a.n:,} MCMC train-split configurations against the same reference): energy W2 "
             f"{fl['energy_w2']:.3f}, distance W2 {fl['distance_w2']:.4f}, outliers {fl['outliers']}.", "",
             "| model | training steps | train wall s | resumed from step |", "|---|---|---|---|"]
    for variant, m in info["models"].items():
        secs = f"{m['train_seconds']:.0f}" + ("" if m["train_seconds_complete"] else " (+ earlier segments)")
        lines.append(f"| {variant} | {m['steps']} | {secs} | {m['resumed_from']} |")
    lines += ["", "| model | sampler | NFE | energy W2 | distance W2 | outliers per seed |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['sampler']} | {r['nfe']} | {_mean_std(r['energy_w2'], 3)} | "
                     f"{_mean_std(r['distance_w2'], 4)} | {', '.join(map(str, r['outliers']))} |")
    lines += ["", "Overrides of the after model: `" + " ".join(info["models"].get("EDM precond (after)", {})
                                                              .get("overrides", [])) + "`."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
