"""Exact divergence of a particle model's velocity (what every ESS and NLL evaluation pays per ODE step), before
and after issue 16, on this machine: seconds per evaluation and the largest difference from the former result.

    python -m benchmarks.exact_divergence [--reps 3]

Variants: "unit vectors" -- the former implementation, one backward pass per (node slot, coordinate), kept here
as the baseline; "Helmert loop" -- ``divergence="exact"`` now, one backward pass per basis vector of the zero-CoM
subspace (``d`` fewer); "vmap" -- ``divergence="exact_vmap"``, the same passes batched by ``torch.func.vmap``
(all at once, and ``d`` at a time).  Model: each config's EGNN at initialisation, float32, one torch thread.
Results: ``benchmarks/results/exact_divergence.md``, naming the machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from benchmarks.harness import machine

import moldiff
from moldiff.diffusion.likelihood import divergence_exact, divergence_exact_vmap
from moldiff.diffusion.spaces import node_slots

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "exact_divergence.md"
#: (config, configurations per evaluation)
SYSTEMS = [("dw4_eqotcfm", 1000), ("lj13_eqotcfm", 100), ("lj55_eqotcfm", 10)]


def unit_vector_divergence(v: torch.Tensor, x: torch.Tensor, space) -> torch.Tensor:
    """The former implementation (baseline): one backward pass per (node slot, coordinate)."""
    counts = space.counts.to(x.device)
    slot = node_slots(space.batch, counts)
    div = torch.zeros(space.num_graphs, device=v.device, dtype=v.dtype)
    for k in range(int(counts.max())):
        sel = (slot == k).to(v.dtype)
        for d in range(x.shape[1]):
            (g,) = torch.autograd.grad((v[:, d] * sel).sum(), x, retain_graph=True)
            div.index_add_(0, space.batch, g[:, d] * sel)
    return div


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    lines = ["# Exact divergence for ESS / NLL (issue 16)", "",
             f"Machine: {machine()}, one torch thread.  Command: `python -m benchmarks.exact_divergence --reps "
             f"{args.reps}`.  One evaluation = the velocity of B configurations and its exact divergence (each "
             "config's EGNN at initialisation, float32, t = 0.5); median wall seconds over the repetitions; "
             "'max rel. diff.' against the former unit-vector loop.  'per 10k samples at 40 NFE' extrapolates the "
             "ESS pass of 10,000 samples with a 20-step Heun ODE (40 evaluations).", "",
             "| system | B | variant | backward passes | s / evaluation | speed-up | max rel. diff. | "
             "h per 10k samples at 40 NFE |", "|---|---|---|---|---|---|---|---|"]
    for name, B in SYSTEMS:
        cfg = moldiff.load_config(name, ["tracking.enabled=false"])
        task = moldiff.get_task(cfg.task)(cfg)
        model = task.build_model().eval()
        den = task.denoiser(model, B, "cpu")
        space = den.space
        n, d = task.system.n_particles, task.system.dim
        x0 = space.randn_like(torch.zeros(B * n, d), torch.Generator().manual_seed(0))
        t = den.batch_time(0.5, x0)

        def fn(z):
            return den.velocity(space.project(z), t)

        def run(variant):
            x = x0.detach().requires_grad_(True)
            if variant.startswith("vmap"):
                return divergence_exact_vmap(fn, x, space, chunk_size=d if variant == "vmap, d at a time" else None)[1]
            v = fn(x)
            return (unit_vector_divergence if variant == "unit vectors (before)" else divergence_exact)(v, x, space)

        passes = {"unit vectors (before)": n * d, "Helmert loop (exact)": (n - 1) * d,
                  "vmap, all at once (exact_vmap)": (n - 1) * d, "vmap, d at a time": (n - 1) * d}
        base_t, base = None, None
        if n > 4:  # chunked vmap on LJ13 (B = 100) grew past 21 GB and was killed by the OOM killer (2026-11-29)
            del passes["vmap, d at a time"]
        if (n - 1) * d * B * n * n > 2_000_000:  # the batched activations would take gigabytes: the loops only
            del passes["vmap, all at once (exact_vmap)"]
        for variant, k in passes.items():
            run(variant)  # warm-up
            ts, out = [], None
            for _ in range(args.reps):
                t0 = time.perf_counter()
                out = run(variant)
                ts.append(time.perf_counter() - t0)
            s = float(np.median(ts))
            if base is None:
                base_t, base = s, out
            diff = float(((out - base).abs() / base.abs().clamp(min=1e-12)).max())
            hours = s * (10_000 / B) * 40 / 3600
            lines.append(f"| {name} | {B} | {variant} | {k} | {s:.3f} | {base_t / s:.2f}x | {diff:.1e} | {hours:.2f} |")
            print(lines[-1], flush=True)
    lines += ["", "Not measured: `exact_vmap` with `chunk_size = d` on LJ13 (B = 100) grew past 21 GB and was killed by "
              "the kernel's OOM killer on this 24 GB machine; on LJ55 the vmap variants were not run (gigabytes of "
              "batched activations)."]
    OUT.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
