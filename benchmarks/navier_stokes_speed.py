"""Kolmogorov flow solver speed and the statistically steady state at Re 1000 on 64 x 64.

    python -m benchmarks.navier_stokes_speed [--threads 2] [--dtype float32] [--out benchmarks/results/navier_stokes.md]

1. Spin-up: one batch of 32 random initial fields (``random_initial``, peak wavenumber 4, max|u| 3) run for
   50 time units, then a trajectory of 64 states every 0.2 time units (the SDA-style dataset layout), timed;
   energy, enstrophy, max|u| and the CFL time step are reported at the end of the spin-up and over the 64
   states.
2. Throughput from spun-up states: steps/s and simulated time units/s with the automatic (CFL) time step at
   n = 64 for batch 1, 16, 128, and at n = 256 for batch 1 (the 64^2 state interpolated spectrally); the
   fastest of ``--repeats`` runs (the spin-up in 1. is timed once).

Appends a section to the results file naming the machine and the command.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

from physics.fields.navier_stokes import KolmogorovFlow, energy, enstrophy

from benchmarks.harness import ROOT, cpu_name


def max_speed(flow: KolmogorovFlow, w: torch.Tensor) -> torch.Tensor:
    u, v = flow.velocity(w)
    return (u.square() + v.square()).amax((-2, -1)).sqrt()


def upsample(w: torch.Tensor, m: int) -> torch.Tensor:
    """Band-limited spectral interpolation of ``[..., n, n]`` onto ``m x m``."""
    n, h = w.shape[-1], w.shape[-1] // 2
    src = torch.fft.rfft2(w)
    dst = torch.zeros(*w.shape[:-2], m, m // 2 + 1, dtype=src.dtype)
    dst[..., :h, : h + 1], dst[..., m - h :, : h + 1] = src[..., :h, :], src[..., h:, :]
    return torch.fft.irfft2(dst * (m / n) ** 2, s=(m, m))


def timed_advance(flow: KolmogorovFlow, w: torch.Tensor, duration: float) -> tuple[torch.Tensor, float, int]:
    """``advance`` with the automatic dt; returns the state, seconds and the number of steps taken."""
    count = [0]
    original = KolmogorovFlow._if_rk4

    def counting(*args):
        count[0] += 1
        return original(*args)

    KolmogorovFlow._if_rk4 = staticmethod(counting)
    try:
        t0 = time.perf_counter()
        w = flow.advance(w, duration)
        return w, time.perf_counter() - t0, count[0]
    finally:
        KolmogorovFlow._if_rk4 = staticmethod(original)


def stats(flow: KolmogorovFlow, w: torch.Tensor) -> str:
    e, z, s = energy(w), enstrophy(w), max_speed(flow, w)
    return (
        f"energy {e.mean():.3f} (sd {e.std():.3f}, range {e.min():.3f}-{e.max():.3f}), "
        f"enstrophy {z.mean():.2f} (sd {z.std():.2f}), max|u| {s.mean():.2f} (max {s.max():.2f}), "
        f"CFL dt of one field {0.5 * flow.dx / s.mean():.4f} (of the batch {flow.stable_dt(w):.4f})"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--spinup", type=float, default=50.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="throughput: report the fastest of this many runs")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "navier_stokes.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    flow = KolmogorovFlow()
    lines: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    load0 = os.getloadavg()[0]
    w = flow.random_initial(32, torch.Generator().manual_seed(args.seed), dtype=dtype)
    w, spin_s, spin_steps = timed_advance(flow, w, args.spinup)
    mean_dt = args.spinup / spin_steps
    say(f"- spin-up, batch 32, {args.spinup:g} TU: {spin_s:.1f} s, {spin_steps} steps (mean dt {mean_dt:.4f})")
    say(f"- state after the spin-up: {stats(flow, w)}")
    t0 = time.perf_counter()
    traj = flow.trajectory(w, num_states=64, interval=0.2)
    traj_s = time.perf_counter() - t0
    say(f"- 64 states every 0.2 TU after it (12.6 TU): {traj_s:.1f} s; one batch-32 dataset trajectory "
        f"(spin-up + states) {spin_s + traj_s:.1f} s = {(spin_s + traj_s) / 32:.2f} s per trajectory")
    say(f"- over the 64 states x 32 trajectories: {stats(flow, traj.flatten(0, 1))}")

    say()
    say("| n | batch | steps | steps/s | ms/step | mean dt | TU/s | trajectory-TU/s (batch x TU/s) |")
    say("|---|---|---|---|---|---|---|---|")
    for n, batch, duration in [(64, 1, 5.0), (64, 16, 2.0), (64, 128, 0.5), (256, 1, 0.1)]:
        f = KolmogorovFlow(n=n)
        state = traj[:, -1].repeat(-(-batch // 32), 1, 1)[:batch]
        if n != 64:
            state = upsample(state, n)
        f.advance(state, 0.01)  # warm-up (caches, FFT plans)
        runs = [timed_advance(f, state, duration) for _ in range(args.repeats)]
        secs, steps = min(r[1] for r in runs), runs[0][2]  # fastest repeat: the machine may be shared
        say(f"| {n} | {batch} | {steps} | {steps / secs:.1f} | {1e3 * secs / steps:.2f} | {duration / steps:.4f} | "
            f"{duration / secs:.3f} | {batch * duration / secs:.2f} |")
    load1 = os.getloadavg()[0]

    header = (
        f"\n## {time.strftime('%Y-%m-%d')}: {platform.machine()}, {cpu_name()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {args.threads} threads, {args.dtype}\n\n"
        f"`{' '.join(['python', 'benchmarks/navier_stokes_speed.py'] + sys.argv[1:])}` "
        f"(1-minute load average {load0:.1f} at the start, {load1:.1f} at the end)\n\n"
    )
    out = Path(args.out)
    if not out.exists():
        out.write_text("# Kolmogorov flow solver (`physics/fields/navier_stokes.py`): speed and steady state\n")
    with out.open("a") as fh:
        fh.write(header + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
