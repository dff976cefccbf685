"""Latent against pixel-space assimilation of Kolmogorov flow (issues 17 and 29): the same test windows, the same
observations, SDA, MMPS and DPS with each prior, against climatology; and each prior's unconditional statistics.

    python -m benchmarks.latent_assimilation --latent CKPT --pixel CKPT [--settings coarse sparse]
        [--trajectories 4] [--windows 1] [--ensemble 4] [--length 32] [--steps 32] [--methods sda dps]
        [--prior-samples 8] [--device cpu] [--batch-size N] [--out DIR]

Settings (those of the pixel-space benchmark, ``benchmarks/results/assimilation.md``): ``coarse`` -- 4 x 4 block
means of every 4th state, noise std 0.5; ``sparse`` -- the vorticity at every 4th grid point of every 2nd state,
noise std 0.5.  Test cases: ``--windows`` consecutive windows of ``--length`` states from each test trajectory
(64 states each: two windows of 32, 6.4 time units apart), the first ``--trajectories`` of them; each observed
once with a fixed seed (the same ``y`` for both priors).  Every method draws ``--ensemble`` posterior samples
with the config's predictor-corrector sampler at ``--steps`` steps.  Scores per case (RMSE of the posterior
mean, spread, fair CRPS; :func:`~physics.assimilation.metrics.score_windows`), mean +- standard error over
cases.  Seconds per case: process CPU seconds on the CPU (run with one torch thread), wall seconds on a GPU
(all cases batched, ``--batch-size`` rows at once).  Results: ``<out>.md`` (default
``benchmarks/results/latent_assimilation.md``), the json and figures in ``<out>/``, rewritten after every
setting so that a run stopped early keeps what it finished.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402
from benchmarks.harness import machine

import moldiff  # noqa: E402
from physics.assimilation.metrics import score_windows  # noqa: E402
from physics.fields import plots  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "coarse": ["observation.kind=coarsen", "observation.factor=4", "observation.every=4", "observation.noise_std=0.5"],
    "sparse": ["observation.kind=subsample", "observation.stride=4", "observation.every=2", "observation.noise_std=0.5"],
}


class Clock:
    """Process CPU seconds on the CPU; wall seconds (synchronised) on a GPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.unit = "GPU wall s" if self.cuda else "CPU s"

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()


def test_cases(task, windows: int, length: int, count: int, split: str = "test") -> torch.Tensor:
    """``[count, length, H, W]``: ``windows`` consecutive windows of each trajectory of ``split``, trajectory-major."""
    test = task.trajectories(split)
    if windows * length > test.shape[1]:
        raise SystemExit(f"--windows {windows} x --length {length} exceeds the {test.shape[1]} {split} states")
    cases = test[:, : windows * length].reshape(-1, length, *test.shape[2:])
    if count > len(cases):
        raise SystemExit(f"--trajectories {count}: there are {len(cases)} {split} windows")
    return cases[:count]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latent", required=True, help="checkpoint, or - to leave this prior out")
    ap.add_argument("--pixel", required=True, help="checkpoint, or - to leave this prior out")
    ap.add_argument("--settings", nargs="+", default=["coarse", "sparse"], choices=sorted(SETTINGS))
    ap.add_argument("--methods", nargs="+", default=["sda", "dps"], choices=["sda", "mmps", "dps"])
    ap.add_argument("--trajectories", type=int, default=4, help="test cases (windows), at most 8 x --windows")
    ap.add_argument("--windows", type=int, default=1, help="windows of --length states per test trajectory")
    ap.add_argument("--ensemble", type=int, default=4)
    ap.add_argument("--length", type=int, default=32)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--prior-samples", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=0, help="rows per guided batch (default: the config's)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "latent_assimilation")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    clock = Clock(device)
    args.out.mkdir(parents=True, exist_ok=True)
    priors = {name: ckpt for name, ckpt in (("latent", args.latent), ("pixel", args.pixel)) if ckpt != "-"}
    rows, prior_rows = [], {}
    for setting in args.settings:
        over = [*SETTINGS[setting], f"sampler.steps={args.steps}", f"eval.length={args.length}"]
        over += [f"eval.batch_size={args.batch_size}"] if args.batch_size else []
        tasks = {name: moldiff.load_model(ckpt, overrides=over, device=args.device) for name, ckpt in priors.items()}
        task0 = next(iter(tasks.values()))[0]  # truth, observations and operator: the same for every prior
        truth = test_cases(task0, args.windows, args.length, args.trajectories)
        y = task0.observe(truth.double(), torch.Generator().manual_seed(7919)).float()
        observed = torch.zeros(args.length, dtype=torch.bool)
        observed[task0.operator.times(args.length)] = True
        clim = (truth - task0.stats[0]).square().flatten(1).mean(1).sqrt()
        rows.append(dict(setting=setting, prior="-", method="climatology", rmse=float(clim.mean()),
                         rmse_se=float(clim.std() / len(clim) ** 0.5), rmse_windows=clim.tolist()))
        if not prior_rows and args.prior_samples:  # unconditional statistics, once (they do not depend on y)
            for name, (task, model) in tasks.items():
                task.cfg.eval.prior_samples = args.prior_samples
                task.cfg.eval.batch_size = args.batch_size or args.prior_samples
                m, figs = task.prior_statistics(model, task.trajectories("test")[:, : args.length],
                                                generator=torch.Generator(device).manual_seed(2), progress=False)
                prior_rows[name] = m
                figs["prior_statistics"].savefig(args.out / f"prior_{name}_statistics.png", dpi=100)
                figs["prior_samples"].savefig(args.out / f"prior_{name}_samples.png", dpi=80)
                print(name, m, flush=True)
        ensembles = {}
        for method in args.methods:  # methods outermost: a run stopped early has every prior's rows of a method
            for name, (task, model) in tasks.items():
                t0 = clock()
                ens = task.assimilate(model, y, n=args.ensemble, length=args.length, method=method,
                                      generator=torch.Generator(device).manual_seed(1), progress=False).cpu()
                seconds = (clock() - t0) / len(truth)
                scores = score_windows(ens, truth, observed)
                s = scores.summary()
                rows.append(dict(setting=setting, prior=name, method=method, rmse=s["rmse"][0], rmse_se=s["rmse"][1],
                                 spread=s["spread"][0], crps=s["crps"][0], crps_se=s["crps"][1], seconds=seconds,
                                 rmse_windows=scores.rmse.tolist(), checkpoint=str(priors[name])))
                print(rows[-1], flush=True)
                write(args, rows, prior_rows, clock.unit, len(truth))
                ensembles[f"{name} {method}"] = ens[0].numpy()
        tr, yy = truth[0].numpy(), y[0].numpy()
        title = f"Kolmogorov, {setting} observations: first test trajectory"
        plots.field_figure(tr, yy, ensembles, task0.operator, task0.spec.interval, title).savefig(
            args.out / f"{setting}_fields.png", dpi=80)
        plots.spectra_figure(tr, ensembles, f"{title}: energy spectra").savefig(args.out / f"{setting}_spectra.png", dpi=100)
        plots.write_animation(args.out / f"{setting}.gif", tr, ensembles, task0.spec.interval, f"Kolmogorov {setting}")
        write(args, rows, prior_rows, clock.unit, len(truth))


def write(args, rows: list[dict], prior_rows: dict, unit: str, cases: int) -> None:
    (args.out / "results.json").write_text(json.dumps(dict(rows=rows, priors=prior_rows, unit=unit, args=vars(args) | {
        "out": str(args.out)}), indent=1))
    f = lambda v, d=3: "" if v is None else f"{v:.{d}f}"  # noqa: E731
    device = torch.cuda.get_device_name(args.device) if unit.startswith("GPU") else f"{machine()}, one torch thread"
    lines = ["# Learned priors assimilating Kolmogorov flow (issues 17 and 29)", "",
             f"Machine: {device}, torch {torch.__version__}.  Command: `python "
             f"benchmarks/latent_assimilation.py --latent {args.latent} --pixel {args.pixel} --settings "
             f"{' '.join(args.settings)} --methods {' '.join(args.methods)} --trajectories {args.trajectories} "
             f"--windows {args.windows} --ensemble {args.ensemble} --length {args.length} --steps {args.steps} "
             f"--device {args.device}`.  {cases} test windows of {args.length} states ({args.windows} per test "
             f"trajectory), {args.ensemble} posterior samples each, the predictor-corrector sampler at {args.steps} "
             f"steps; mean +- standard error over windows; seconds: {unit} per window.  Vorticity units (data std "
             "about 4.7).", "",
             f"| setting | prior | method | RMSE | spread | CRPS | {unit} / window |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['prior']} | {r['method']} | {f(r['rmse'])} ± {f(r['rmse_se'])} | "
                     f"{f(r.get('spread'))} | {f(r.get('crps'))} | {f(r.get('seconds'), 2)} |")
    if prior_rows:
        keys = [k for k in next(iter(prior_rows.values())) if k != "prior/seconds"]
        lines += ["", f"Unconditional statistics: {args.prior_samples} prior trajectories of {args.length} states "
                  "against the test split (`prior/...` of `TrajectoryTask.prior_statistics`).", "",
                  "| statistic | " + " | ".join(prior_rows) + " |", "|---|" + "---|" * len(prior_rows)]
        for k in keys:
            lines.append(f"| {k.removeprefix('prior/')} | " + " | ".join(f"{m[k]:.3f}" for m in prior_rows.values()) + " |")
    (args.out.parent / f"{args.out.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
