"""Equivariant OT coupling at training speed (issue 16): seconds per batch and the mean squared distance of the
returned pairs (what the flow-matching loss sees) for each alignment search, beside one training step.

    python -m benchmarks.coupling_speed [--reps 3]

Batches: the config's batch size of MCMC training data (``physics/particles/reference.py``) against fresh
Gaussian source draws, both zero-CoM.  Searches: ``identity`` (the old LJ default; not rotation-invariant),
``pca`` on all pairs (Klein et al.'s invariant coupling), and the two-pass ``skew`` (one start, one round, all
pairs) + ``pca`` re-alignment of the selected pairs.  "independent" is the aligned cost of unpaired draws
(``pca``, 3 rounds).  Results: ``benchmarks/results/coupling_speed.md``, naming the machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from benchmarks.harness import machine

import moldiff
from moldiff.diffusion.alignment import align_pairs
from moldiff.diffusion.couplings import Coupler
from moldiff.diffusion.spaces import remove_com_dense

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "coupling_speed.md"
SYSTEMS = ["dw4_eqotcfm", "lj13_eqotcfm", "lj55_eqotcfm"]
SEARCHES = {
    "identity, 3 rounds (not invariant)": dict(starts="identity", iterations=3),
    "pca, 10 rounds": dict(starts="pca", iterations=10),
    "pca, 3 rounds": dict(starts="pca", iterations=3),
    "skew 1 round + pca 3 rounds on the selected pairs": dict(starts="skew", iterations=1, refine_starts="pca",
                                                              refine_iterations=3),
}


def train_step_seconds(task, batch: torch.Tensor, reps: int) -> float:
    """One optimiser step of the config's model, coupling excluded (the coupler swapped for independent pairs)."""
    model = task.build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    coupler, task.coupler = task.coupler, Coupler("independent")
    g = torch.Generator().manual_seed(0)
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        loss = task.loss(model, batch, g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    task.coupler = coupler
    return float(np.median(times[1:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    lines = ["# Equivariant OT coupling at training speed (issue 16)", "",
             f"Machine: {machine()}, one torch thread.  Command: `python -m benchmarks.coupling_speed --reps "
             f"{args.reps}`.  Per system: the config's batch of MCMC training data against Gaussian source draws; "
             "time = median wall seconds per coupler call over the repetitions; pair cost = mean |x0 - aligned x1|^2 "
             "of the returned pairs (sum over particles and coordinates); a training step = forward, backward and "
             "AdamW of the config's model with the coupling excluded.", "",
             "| system | batch | search | seconds / batch | pair cost | share of a training step |",
             "|---|---|---|---|---|---|"]
    for name in SYSTEMS:
        cfg = moldiff.load_config(name, ["tracking.enabled=false"])
        task = moldiff.get_task(cfg.task)(cfg)
        B = cfg.train.batch_size
        data = task.reference("train", 4 * B, progress=False)
        rng = torch.Generator().manual_seed(0)
        batches = [(torch.randn(B, *data.shape[1:], generator=rng), data[torch.randperm(len(data), generator=rng)[:B]])
                   for _ in range(args.reps)]
        batches = [(x0 - x0.mean(1, keepdim=True), x1 - x1.mean(1, keepdim=True)) for x0, x1 in batches]
        step = train_step_seconds(task, batches[0][1], args.reps)
        indep = np.mean([align_pairs(remove_com_dense(x0.double().numpy()), remove_com_dense(x1.double().numpy()),
                                     starts="pca", iterations=3)[0].mean() for x0, x1 in batches])
        lines.append(f"| {name} | {B} | independent pairs (aligned) | - | {indep:.3f} | - |")
        for label, kw in SEARCHES.items():
            c = Coupler("eq_ot", **kw)
            secs, costs = [], []
            for x0, x1 in batches:
                t0 = time.perf_counter()
                a, b = c(x0, x1)
                secs.append(time.perf_counter() - t0)
                costs.append(float((a.double() - b.double()).pow(2).sum((1, 2)).mean()))
            s = float(np.median(secs))
            lines.append(f"| {name} | {B} | {label} | {s:.3f} | {np.mean(costs):.3f} | {s / (s + step):.0%} |")
            print(lines[-1], flush=True)
        lines.append(f"| {name} | {B} | (training step, coupling excluded) | {step:.3f} | - | - |")
    OUT.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
