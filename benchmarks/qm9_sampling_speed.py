"""Sampling speed of a QM9 graph model (the shipped one by default): molecules per second of wall time and per core,
at several NFE, thread counts and sampling batch sizes, plus the wall time of the fresh-install command.

    python -m benchmarks.qm9_sampling_speed [--model qm9 | CHECKPOINT] [--n 300] [--nfe 10 20 50]
        [--threads 1 2] [--batch 50 250]
    python -m benchmarks.qm9_sampling_speed --fresh-install          # `moldiff sample --pretrained qm9 -n 100`
                                                                      # with an empty HOME and cache, 3 times

Nothing else may run on the machine meanwhile.  Results: ``benchmarks/results/qm9_sampling_speed.md`` (+ .json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import moldiff
from benchmarks.harness import cpu_name

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "qm9_sampling_speed"




def load(model: str):
    if Path(model).is_file():
        return moldiff.load_model(model, device="cpu")
    p = moldiff.pretrained(model, device="cpu")
    return p.task, p.model


def speed(args) -> list[dict]:
    task, model = load(args.model)
    rows = []
    task.sample(model, 8, generator=torch.Generator().manual_seed(0),
                sampler=moldiff.SamplerConfig(name="ode_euler", steps=2), progress=False)  # warm-up
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batch:
            task.cfg.eval.batch_size = batch
            for nfe in args.nfe:
                sampler = moldiff.SamplerConfig(name="ode_euler", steps=nfe)
                w0, c0 = time.perf_counter(), time.process_time()
                task.sample(model, args.n, generator=torch.Generator().manual_seed(1), sampler=sampler, progress=False)
                wall, cpu = time.perf_counter() - w0, time.process_time() - c0
                rows.append({"threads": threads, "batch": batch, "nfe": nfe, "n": args.n, "wall_s": wall, "cpu_s": cpu,
                             "mol_per_s": args.n / wall, "mol_per_s_per_core": args.n / wall / threads})
                print(rows[-1], flush=True)
    return rows


def fresh_install(repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as home:
            env = {k: v for k, v in os.environ.items() if k not in ("MOLDIFF_CACHE", "OMP_NUM_THREADS")}
            env["HOME"] = home
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-m", "moldiff", "sample", "--pretrained", "qm9", "-n", "100", "--out",
                                  str(Path(home) / "mols.sdf"), "--no-progress"], env=env, cwd=home,
                                 capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if res.returncode:
                raise RuntimeError(res.stderr[-2000:])
            left = sorted(str(p.relative_to(home)) for p in Path(home).rglob("*") if p.is_file())
            print(f"fresh install: {times[-1]:.1f} s; files in HOME afterwards: {left}", flush=True)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qm9")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--nfe", type=int, nargs="+", default=[10, 20, 50])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, nargs="+", default=[50, 250])
    ap.add_argument("--fresh-install", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    data = json.loads(OUT.with_suffix(".json").read_text()) if OUT.with_suffix(".json").is_file() else {}
    data["machine"] = f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}"
    if a.fresh_install:
        data["fresh_install_s"] = fresh_install(a.repeats)
    else:
        data["model"], data["rows"] = a.model, speed(a)
    OUT.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    lines = ["# QM9 sampling speed", "", f"Machine: {data['machine']}, nothing else running.  Made by "
             "`python -m benchmarks.qm9_sampling_speed` (docstring).  Euler steps on positions and jumps on tokens, one "
             "network evaluation per step; molecules grouped by size into batches of at most `batch`.", ""]
    if data.get("rows"):
        lines += [f"Model: `{data['model']}`.", "", "| threads | batch | NFE | molecules | wall s | molecules/s | "
                  "molecules/s per core |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['threads']} | {r['batch']} | {r['nfe']} | {r['n']} | {r['wall_s']:.1f} | {r['mol_per_s']:.1f} | "
                  f"{r['mol_per_s_per_core']:.1f} |" for r in data["rows"]]
    if data.get("fresh_install_s"):
        ts = data["fresh_install_s"]
        lines += ["", f"Fresh install (`moldiff sample --pretrained qm9 -n 100` with an empty HOME and cache, the "
                  f"default threads): {', '.join(f'{t:.1f}' for t in ts)} s wall."]
    OUT.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
