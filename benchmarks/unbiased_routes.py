"""Unbiased samples from a trained Boltzmann generator (issue 16, item 4): how many energy evaluations each route
needs for a given error in the mean energy.

    python -m benchmarks.unbiased_routes CHECKPOINT [--n 10000] [--steps 10 30 100 300 1000] [--set KEY=VALUE ...]
        [--cache DIR [--chunk 500] [--samples-only]]

With ``--cache`` the flow samples and their log q are made in chunks of ``--chunk`` (chunk k from seed
``seed * 1_000_003 + k``), each saved to ``DIR/chunk_K.pt`` as it finishes: a killed run resumes, and several
processes started with ``--samples-only`` share the chunks (a chunk being made is claimed by a lock file naming its
process).  The run without ``--samples-only`` makes the chunks left, waits for the others', then reports.

From one set of ``n`` flow samples with their log q (the ESS pass: the checkpoint's ODE sampler, exact
divergence):
  * flow -- the raw samples;
  * reweight -- self-normalised importance weights (1 energy evaluation per sample);
  * MALA k -- k MALA steps from every sample (k + 1 energy + force evaluations per sample);
  * resample + MALA k -- systematic resampling by the weights, then k MALA steps (k + 1 per sample).
Each row: the mean-energy estimate, its standard error (bootstrap over the samples for reweighting; independent
chains for MALA; after resampling, the spread over the number of distinct ancestors, since copies are correlated), the error against the MCMC test split's mean (whose own standard error comes from
its independent chains), energy W2 and the evaluations.  Results: ``benchmarks/results/unbiased_routes_<system>.md``
and ``.png``, naming the machine.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from benchmarks.harness import machine

import moldiff  # noqa: E402
from physics.particles.metrics import (distance_histogram_tv, distance_wasserstein, energy_wasserstein,  # noqa: E402
                                       importance_estimate)  # noqa: E402
from physics.particles.reference import reference_info  # noqa: E402
from physics.particles.refine import mala_refine, resample_mala, reweight  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def weighted_mean_se(e: np.ndarray, w: np.ndarray, rng: np.random.Generator, n_boot: int = 500) -> float:
    """Bootstrap standard error of the self-normalised mean ``Σ w e / Σ w``."""
    idx = rng.integers(0, len(e), size=(n_boot, len(e)))
    ww = w[idx]
    return float(((ww * e[idx]).sum(1) / ww.sum(1)).std(ddof=1))


def _claim(lock: Path) -> bool:
    """Create ``lock`` naming this process; take over a lock whose process is gone."""
    try:
        with lock.open("x") as f:
            f.write(str(os.getpid()))
        return True
    except FileExistsError:
        try:
            os.kill(int(lock.read_text() or 0), 0)
            return False
        except (ProcessLookupError, ValueError):
            lock.unlink(missing_ok=True)
            return _claim(lock)


def cached_flow_samples(task, model, n: int, *, seed: int, method: str, steps: int, cache: Path, chunk: int,
                        wait: bool, tag: str) -> tuple[torch.Tensor, torch.Tensor, int, float] | None:
    """``(x, log_q, nfe, seconds summed over the chunks)`` for ``n`` flow samples made chunk by chunk under ``cache``
    (see the module docstring); ``None`` when
    ``wait`` is false and chunks made by other processes are still missing."""
    cache.mkdir(parents=True, exist_ok=True)
    files = [cache / f"chunk_{k:04d}.pt" for k in range(math.ceil(n / chunk))]
    meta = dict(tag=tag, method=method, steps=steps, chunk=chunk, seed=seed)
    for k, f in enumerate(files):
        lock = f.with_suffix(".lock")
        if f.exists() or not _claim(lock):
            continue
        m, t0 = min(chunk, n - k * chunk), time.time()
        x, log_q, nfe = task.sample_with_log_q(model, m, generator=torch.Generator().manual_seed(seed * 1_000_003 + k),
                                               method=method, steps=steps, progress=True)
        tmp = f.with_suffix(".tmp")
        torch.save(dict(meta, x=x, log_q=log_q, nfe=nfe, seconds=time.time() - t0), tmp)
        os.replace(tmp, f)
        lock.unlink(missing_ok=True)
        print(f"chunk {k + 1}/{len(files)} done", flush=True)
    while wait and not all(f.exists() for f in files):
        time.sleep(10)
    if not all(f.exists() for f in files):
        return None
    parts = [torch.load(f, weights_only=True) for f in files]
    for f, p in zip(files, parts):
        if {k: p[k] for k in meta} != meta:
            raise SystemExit(f"{f} was made with {({k: p[k] for k in meta})}, not {meta}: use another --cache")
    return (torch.cat([p["x"] for p in parts]), torch.cat([p["log_q"] for p in parts]), parts[0]["nfe"],
            sum(p["seconds"] for p in parts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--steps", type=int, nargs="*", default=[10, 30, 100, 300, 1000])
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=None, help="make the flow samples chunk by chunk here (resumable)")
    ap.add_argument("--chunk", type=int, default=500)
    ap.add_argument("--out", type=Path, default=None,
                    help="results stem (default benchmarks/results/unbiased_routes_<system>)")
    ap.add_argument("--samples-only", action="store_true", help="with --cache: make chunks, then exit")
    args = ap.parse_args()
    torch.set_num_threads(1)
    task, model = moldiff.load_model(args.checkpoint, overrides=args.overrides, device="cpu")
    system = task.system
    sampler = task._sampler(None)
    ode = sampler.name.startswith("ode_") and sampler.name != "ode_rk45"
    method = sampler.name.removeprefix("ode_") if ode else task.cfg.eval.likelihood_method
    steps = sampler.steps if ode else task.cfg.eval.likelihood_steps
    t0 = time.time()
    if args.cache is not None:
        got = cached_flow_samples(task, model, args.n, seed=args.seed, method=method, steps=steps, cache=args.cache,
                                  chunk=args.chunk, wait=not args.samples_only, tag=str(Path(args.checkpoint).resolve()))
        if args.samples_only:
            return
        x, log_q, nfe, flow_seconds = got
    else:
        x, log_q, nfe = task.sample_with_log_q(model, args.n, generator=torch.Generator().manual_seed(args.seed),
                                               method=method, steps=steps, progress=True)
        flow_seconds = time.time() - t0
    ref = task.reference("test", progress=False)
    e_ref = system.energy(ref.double()).numpy()
    info = reference_info(system.name, "test", cache_dir=task.cfg.data.cache_dir, recipe=task._recipe(), progress=False)
    ref_mean, ref_se, h = float(e_ref.mean()), float(info["sem_energy"]), float(info["step_size_median"])
    rng = np.random.default_rng(args.seed)
    T = system.temperature
    rows = []

    def add(route, e, w, evals, seconds, acc=None, ancestors=None):
        e = np.asarray(e, dtype=np.float64)
        ok = np.isfinite(e)
        if w is None:
            mean, se = float(e[ok].mean()), float(e[ok].std(ddof=1) / math.sqrt(min(ok.sum(), ancestors or ok.sum())))
            w2 = energy_wasserstein(e, e_ref, 2)
        else:
            w = np.where(ok, w, 0.0)
            mean, se = float((w * np.nan_to_num(e)).sum() / w.sum()), weighted_mean_se(np.nan_to_num(e), w, rng)
            w2 = float("nan")
        err = mean - ref_mean
        rows.append(dict(route=route, mean=mean, se=se, err=err, z=err / math.hypot(se, ref_se), w2=w2,
                         evals=evals, seconds=seconds, acc=acc))
        print(rows[-1], flush=True)

    e_flow = system.energy(x.double()).numpy()
    add("flow", e_flow, None, 0, 0.0)
    rw = reweight(system, x, log_q)
    add("reweight", rw.energies.numpy() * T, rw.weights.numpy(), 1, 0.0)
    g = torch.Generator().manual_seed(args.seed + 1)
    for k in args.steps:
        t1 = time.time()
        m = mala_refine(system, x, k, generator=g, step_size=h)
        add(f"MALA {k}", m.energies.numpy() * T, None, k + 1, time.time() - t1, m.acceptance)
    for k in [0, *[s for s in args.steps if s <= 100]]:
        t1 = time.time()
        r = resample_mala(system, x, log_q, k, generator=g, step_size=h)
        add(f"resample + MALA {k}", r.energies.numpy() * T, None, k + 1, time.time() - t1, r.acceptance, r.ancestors)

    out = args.out or ROOT / "benchmarks" / "results" / f"unbiased_routes_{system.name}"
    imp = importance_estimate((-rw.energies - log_q.double()).numpy(), n_boot=1000, generator=np.random.default_rng(0))
    tv, dw2 = distance_histogram_tv(x, ref), distance_wasserstein(x, ref)
    lines = [f"# Unbiased samples from a trained generator: {system.name} (issue 16)", "",
             f"Machine: {machine()}, one torch thread.  Command: `python -m benchmarks.unbiased_routes {args.checkpoint} "
             f"--n {args.n} --steps {' '.join(map(str, args.steps))}"
             + "".join(f" --set {o}" for o in args.overrides)
             + (f" --cache DIR --chunk {args.chunk}" if args.cache else "") + f"`.  Flow: {task.method_label()}, "
             f"probability-flow ODE, {method} {steps} steps ({nfe} NFE), {args.n} samples with log q in {flow_seconds:.0f} s of sampling: "
             f"ESS {imp.ess:.4f} ± {imp.ess_se:.4f}, log Z {imp.log_z:.3f} ± {imp.log_z_se:.3f} (bootstrap, 1000 "
             f"resamples), distance TV {tv:.3f}, distance W2 {dw2:.4f}.  Reference: MCMC test split, mean energy {ref_mean:.3f} ± {ref_se:.3f} "
             f"(kT units; standard error from independent chains).  MALA step size {h:.2g} (the reference chains' "
             "median).  z = error / combined standard error.", "",
             "| route | energy evaluations per sample | mean energy | SE | error vs reference | z | energy W2 | "
             "MALA acceptance | s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = "-" if r["acc"] is None else f"{r['acc']:.2f}"
        lines.append(f"| {r['route']} | {r['evals']} | {r['mean']:.3f} | {r['se']:.3f} | {r['err']:+.3f} | "
                     f"{r['z']:+.1f} | {r['w2']:.3f} | {acc} | {r['seconds']:.1f} |".replace("| nan |", "| - |"))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for prefix, marker in (("MALA", "o"), ("resample + MALA", "s")):
        pts = [r for r in rows if r["route"].startswith(prefix + " ")]
        ax.errorbar([r["evals"] for r in pts], [abs(r["err"]) for r in pts], yerr=[r["se"] for r in pts],
                    marker=marker, label=prefix, capsize=2)
    for r in rows:
        if r["route"] in ("flow", "reweight"):
            ax.errorbar([max(r["evals"], 0.5)], [abs(r["err"])], yerr=[r["se"]], marker="D", label=r["route"], capsize=2)
    ax.axhline(ref_se, color="k", ls=":", lw=1, label="reference SE")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("energy evaluations per sample")
    ax.set_ylabel("|mean energy error| (kT)")
    ax.set_title(f"{system.name}: routes to unbiased samples", fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)


if __name__ == "__main__":
    main()
