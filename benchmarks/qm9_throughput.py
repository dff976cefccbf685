"""QM9 EDM throughput: training molecules/s and sampling molecules/s at fixed settings.

    python -m benchmarks.qm9_throughput                       # EDM size (9 x 256), batch 64
    python -m benchmarks.qm9_throughput --batch-size 256 --compile --sample-n 10000 --sample-steps 50

Training runs the trainer's step (the task's loss, backward, clipping, fused AdamW with the device-side
non-finite skip, EMA update) on bucketed QM9 batches; sampling runs the shared ancestral sampler on
sizes drawn from the training histogram.  Warm-up steps are excluded; CUDA is synchronised around each
timed region only.  A row is appended to ``benchmarks/results/qm9_throughput.md`` naming the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time
from pathlib import Path

import torch

from moldiff.config import SamplerConfig
from moldiff.molecules.task import QM9Config, QM9Task
from moldiff.training.ema import EMA
from moldiff.training.trainer import step_seed
from benchmarks.harness import machine




def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_train(task: QM9Task, device, steps: int, warmup: int, bf16: bool, compile_: bool) -> dict:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = task.build_model().to(device)
    ema = EMA(model, 0.9999)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    net = torch.compile(model) if compile_ else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if (bf16 and device.type == "cuda") else contextlib.nullcontext()
    batches = task.train_batches(start_step=0, rank=0, world_size=1, device=device)
    gen = torch.Generator(device=device)
    params = list(model.parameters())
    n_mol, t0 = 0, None
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            t0 = time.perf_counter()
        batch = next(batches)
        gen.manual_seed(step_seed(0, 0, step))
        with autocast:
            loss = task.loss(net, batch, gen).float().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        ok = torch.isfinite(gnorm)
        opt.found_inf = (~ok).float()
        opt.step()
        ema.update(model, gate=ok)
        if step >= warmup:
            n_mol += batch.num_graphs
    sync(device)
    dt = time.perf_counter() - t0
    return {"train_mol_per_s": n_mol / dt, "train_step_ms": 1000 * dt / steps, "params": sum(p.numel() for p in params),
            "model": model}


def bench_sample(task: QM9Task, model, device, n: int, steps: int, bf16: bool) -> dict:
    model.eval()
    gen = torch.Generator(device=device).manual_seed(0)
    scfg = SamplerConfig(name="ancestral", steps=steps)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if (bf16 and device.type == "cuda") else contextlib.nullcontext()
    with autocast:
        task.sample(model, min(n, task.cfg.eval.batch_size), generator=gen, sampler=SamplerConfig(name="ancestral", steps=2),
                    progress=False)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        task.sample(model, n, generator=gen, sampler=scfg, progress=False)
        sync(device)
    dt = time.perf_counter() - t0
    return {"sample_mol_per_s": n / dt, "sample_seconds": dt}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=9)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="timed training steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--bucket", type=int, default=32, help="data.bucket_batches (1: no size bucketing)")
    p.add_argument("--no-bf16", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--sample-n", type=int, default=100)
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--sample-batch", type=int, default=1000)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "qm9_throughput.md"))
    a = p.parse_args()

    device = torch.device(a.device)
    cfg = QM9Config()
    cfg.model.hidden, cfg.model.layers = a.hidden, a.layers
    cfg.train.batch_size = a.batch_size
    cfg.data.bucket_batches = a.bucket
    cfg.eval.batch_size = a.sample_batch
    task = QM9Task(cfg)
    bf16 = not a.no_bf16
    tr = bench_train(task, device, a.steps, a.warmup, bf16, a.compile)
    sa = bench_sample(task, tr["model"], device, a.sample_n, a.sample_steps, bf16) if a.sample_n else {}
    dtype = "bf16 autocast" if (bf16 and device.type == "cuda") else "fp32"
    row = (f"| {machine()} | {a.layers}x{a.hidden} ({tr['params'] / 1e6:.2f} M) | {a.batch_size} | "
           f"{'bucketed' if a.bucket > 1 else 'random'} | {dtype}{', compiled' if a.compile else ''} | "
           f"{tr['train_mol_per_s']:.1f} ({tr['train_step_ms']:.1f} ms/step) | "
           + (f"{a.sample_n} x {a.sample_steps} steps: {sa['sample_mol_per_s']:.2f} ({sa['sample_seconds']:.1f} s) |"
              if sa else "- |"))
    print(row)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists():
        out.write_text("# QM9 EDM throughput (`benchmarks/qm9_throughput.py`)\n\n"
                       "| machine | EGNN | batch | batches | precision | train molecules/s | sampling molecules/s |\n"
                       "|---|---|---|---|---|---|---|\n")
    with out.open("a") as f:
        f.write(row + "\n")


if __name__ == "__main__":
    main()
