"""Backbones side by side: MolGraphNet (EGNN-style) against the e3nn tensor-product network (lmax 1 and 2) on the
QM9 graph recipe, and EDM's EGNN against e3nn on LJ13 -- parameters, training molecules/s (forward + backward +
AdamW on bucketed batches), sampling molecules/s and peak memory per molecule.  Quality at equal CPU-minutes is a
separate, long run (``moldiff train qm9_flow_cpu --set model.backbone=e3nn ...``).

    python -m benchmarks.backbones [--batch-size 64] [--train-steps 20] [--sample-n 64] [--sample-steps 20]

Each configuration runs in its own process (peak RSS is per process); one torch thread unless ``--threads``.
Results: ``benchmarks/results/backbones.md`` (+ ``.json``), naming the machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from benchmarks.harness import machine

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "backbones"

#: (label, config, overrides): sizes chosen for comparable parameter counts
CASES = [
    ("QM9 graph: MolGraphNet 6 x 128", "qm9_flow_cpu", ["model.backbone=molgraph"]),
    ("QM9 graph: e3nn lmax 1, 5 x 128", "qm9_flow_cpu", ["model.backbone=e3nn", "model.hidden=128", "model.layers=5",
                                                         "model.options.lmax=1"]),
    ("QM9 graph: e3nn lmax 2, 5 x 80", "qm9_flow_cpu", ["model.backbone=e3nn", "model.hidden=80", "model.layers=5",
                                                        "model.options.lmax=2"]),
    ("LJ13: EGNN 4 x 64", "lj13_eqotcfm", ["model.backbone=egnn", "model.hidden=64", "model.layers=4"]),
    ("LJ13: e3nn lmax 1, 4 x 48", "lj13_eqotcfm", ["model.backbone=e3nn", "model.hidden=48", "model.layers=4",
                                                   "model.options.lmax=1"]),
    ("LJ13: e3nn lmax 2, 4 x 32", "lj13_eqotcfm", ["model.backbone=e3nn", "model.hidden=32", "model.layers=4",
                                                   "model.options.lmax=2"]),
]


def _activation_mb_per_molecule(task, model, batch, batch_size: int) -> float:
    """Bytes the autograd graph saves for the backward pass of one training batch (unique storages), per molecule:
    the activation memory of training, independent of the allocator and of what else the process holds."""
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = task.loss(model, batch, torch.Generator().manual_seed(0)).mean()
    del loss
    return sum(seen.values()) / 2**20 / batch_size


def _one(config: str, overrides: list[str], batch_size: int, train_steps: int, sample_n: int, sample_steps: int,
         threads: int) -> dict:
    """Measure one configuration in this process."""
    import dataclasses

    import torch

    import moldiff

    torch.set_num_threads(threads)
    cfg = moldiff.load_config(config, [*overrides, f"train.batch_size={batch_size}", "tracking.enabled=false"])
    task = moldiff.get_task(cfg.task)(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = task.build_model()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = task.train_batches(start_step=0, rank=0, world_size=1, device="cpu")
    act_mb = _activation_mb_per_molecule(task, model, next(batches), batch_size)
    g = torch.Generator().manual_seed(0)
    seen = 0
    elapsed = 0.0
    for step in range(train_steps + 2):
        batch = next(batches)
        t0 = time.perf_counter()
        loss = task.loss(model, batch, g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= 2:  # two warm-up steps
            elapsed += time.perf_counter() - t0
            seen += batch_size
    model.eval()
    sampler = dataclasses.replace(cfg.sampler, steps=sample_steps)
    t0 = time.perf_counter()
    with torch.no_grad():
        task.sample(model, sample_n, generator=torch.Generator().manual_seed(1), sampler=sampler, progress=False)
    sample_s = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"params": params, "train_mol_per_s": seen / elapsed, "sample_mol_per_s": sample_n / sample_s,
            "peak_rss_mb": rss_mb, "activation_mb_per_train_molecule": act_mb}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--sample-n", type=int, default=64)
    ap.add_argument("--sample-steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--memory-only", action="store_true",
                    help="add the activation memory to the saved results (no timing: a busy machine is fine)")
    ap.add_argument("--one", nargs=2, metavar=("CONFIG", "OVERRIDES_JSON"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = (args.batch_size, args.train_steps, args.sample_n, args.sample_steps, args.threads)
    if args.one:
        print(json.dumps(_one(args.one[0], json.loads(args.one[1]), *sizes)))
        return
    out = Path(args.out)
    if args.memory_only:
        saved = json.loads(out.with_suffix(".json").read_text())
        for row in saved["rows"]:
            row["activation_mb_per_train_molecule"] = _memory(row["config"], row["overrides"],
                                                              saved["meta"]["batch_size"])
            print(row["label"], f"{row['activation_mb_per_train_molecule']:.2f} MB / molecule", flush=True)
        saved["meta"]["memory_command"] = " ".join(["python", "benchmarks/backbones.py", *sys.argv[1:]])
        _write(out, saved["meta"], saved["rows"])
        return
    rows = []
    for label, config, overrides in CASES:
        cmd = [sys.executable, __file__, "--one", config, json.dumps(overrides), "--batch-size", str(args.batch_size),
               "--train-steps", str(args.train_steps), "--sample-n", str(args.sample_n), "--sample-steps",
               str(args.sample_steps), "--threads", str(args.threads)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
        row = {"label": label, "config": config, "overrides": overrides, **json.loads(res.stdout.strip().splitlines()[-1])}
        rows.append(row)
        print(f"{label}: {row['params']:,} parameters, train {row['train_mol_per_s']:.1f} mol/s, sample "
              f"{row['sample_mol_per_s']:.2f} mol/s ({args.sample_steps} NFE), peak {row['peak_rss_mb']:.0f} MB",
              flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    meta = {"machine": machine(), "torch_threads": args.threads, "batch_size": args.batch_size,
            "train_steps": args.train_steps, "sample_n": args.sample_n, "sample_steps": args.sample_steps,
            "command": " ".join(["python", "benchmarks/backbones.py", *sys.argv[1:]])}
    _write(out, meta, rows)


def _memory(config: str, overrides: list[str], batch_size: int) -> float:
    import moldiff

    torch.set_num_threads(1)
    cfg = moldiff.load_config(config, [*overrides, f"train.batch_size={batch_size}", "tracking.enabled=false"])
    task = moldiff.get_task(cfg.task)(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = task.build_model()
    batches = task.train_batches(start_step=0, rank=0, world_size=1, device="cpu")
    return _activation_mb_per_molecule(task, model, next(batches), batch_size)


def _write(out: Path, meta: dict, rows: list[dict]) -> None:
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    extra = f" Activation memory added by `{meta['memory_command']}`." if "memory_command" in meta else ""
    lines = [f"# Backbones side by side (issue 15)\n", f"Machine: {meta['machine']}, {meta['torch_threads']} torch "
             f"thread(s); command: `{meta['command']}`.{extra} Training: batch {meta['batch_size']}, "
             f"{meta['train_steps']} timed steps (forward, backward, AdamW); sampling: {meta['sample_n']} "
             f"molecules/configurations at {meta['sample_steps']} NFE; training activations = the bytes autograd saves "
             "for the backward pass of one batch (unique storages) per molecule; peak RSS of the whole process (data and model included).\n",
             "| backbone | parameters | train molecules/s | sample molecules/s | training activations (MB / molecule) "
             "| peak RSS (MB) |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['label']} | {r['params']:,} | {r['train_mol_per_s']:.1f} | {r['sample_mol_per_s']:.2f} | "
              f"{r.get('activation_mb_per_train_molecule', float('nan')):.2f} | {r['peak_rss_mb']:.0f} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
