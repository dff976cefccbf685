"""Several moldiff trainings at once on a small machine: wall time of K concurrent 60-step smoke trainings
(``configs/smoke/toy2d_vp.yaml``) under different thread settings, against one run alone.

    python -m benchmarks.thread_contention --jobs 1 2 4 --variants default one_thread passive --repeat 2 \
        --label before --out benchmarks/results/thread_contention.json
    python -m benchmarks.thread_contention --table benchmarks/results/thread_contention.json

A variant is a set of environment variables (``default`` sets none: what a user gets); every job is a separate
``python -m moldiff train`` process started at the same moment; the figure is the wall time until the last one
ends, and its ratio to one job alone under the same variant.  Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "default": {},
    "one_thread": {"OMP_NUM_THREADS": "1"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin_30k": {"GOMP_SPINCOUNT": "30000"},
    "spin_1k": {"GOMP_SPINCOUNT": "1000"},
}
CLEAR = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "GOMP_SPINCOUNT", "MOLDIFF_THREADS")


def run_jobs(k: int, env_extra: dict[str, str], steps: int) -> float:
    env = {key: v for key, v in os.environ.items() if key not in CLEAR}
    env.update(env_extra)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "moldiff", "train", str(ROOT / "configs/smoke/toy2d_vp.yaml"), "--no-progress",
               "--set", f"train.steps={steps}", "--set", "tracking.enabled=false", "--overwrite"]
        t0 = time.perf_counter()
        procs = [subprocess.Popen([*cmd, "--set", f"runs_root={tmp}/{i}"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE) for i in range(k)]
        for p in procs:
            _, err = p.communicate()
            if p.returncode:
                raise RuntimeError(f"a job failed ({p.returncode}): {err.decode()[-2000:]}")
        return time.perf_counter() - t0


def table(path: Path) -> str:
    recs = json.loads(path.read_text())
    lines = ["| label | variant | jobs | wall s (median) | ratio to 1 job |", "|---|---|---|---|---|"]
    for r in recs:
        base = next((b["median"] for b in recs if b["label"] == r["label"] and b["variant"] == r["variant"]
                     and b["jobs"] == 1), None)
        ratio = f"{r['median'] / base:.2f}" if base else "-"
        lines.append(f"| {r['label']} | {r['variant']} | {r['jobs']} | {r['median']:.1f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--variants", nargs="+", default=["default", "one_thread", "passive"], choices=list(VARIANTS))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--label", default="")
    ap.add_argument("--out", type=Path, default=None, help="append the records to this JSON file")
    ap.add_argument("--table", type=Path, default=None, help="print the table of a JSON file and exit")
    args = ap.parse_args()
    if args.table:
        print(table(args.table))
        return
    recs = []
    for variant in args.variants:
        for k in args.jobs:
            times = [run_jobs(k, VARIANTS[variant], args.steps) for _ in range(args.repeat)]
            rec = {"label": args.label, "variant": variant, "env": VARIANTS[variant], "jobs": k, "times": times,
                   "median": statistics.median(times), "steps": args.steps, "cpus": os.cpu_count(),
                   "date": time.strftime("%Y-%m-%d %H:%M")}
            recs.append(rec)
            print(json.dumps(rec), flush=True)
    if args.out:
        old = json.loads(args.out.read_text()) if args.out.is_file() else []
        args.out.write_text(json.dumps(old + recs, indent=1) + "\n")


if __name__ == "__main__":
    main()
