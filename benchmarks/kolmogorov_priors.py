"""Which Kolmogorov trajectory prior keeps the data's time structure (issue 29, item 1): unconditional samples of
each checkpoint against the test split.

    python -m benchmarks.kolmogorov_priors LABEL=CKPT [LABEL=CKPT ...] [--samples 8] [--length 32] [--steps 32]
        [--out benchmarks/results/kolmogorov_priors]

For each prior: ``--samples`` trajectories of ``--length`` states (windows composed by the config's
predictor-corrector sampler at ``--steps`` steps), decoded to vorticity, and the statistics of
:func:`~physics.fields.statistics.field_statistics` beside those of the 8 test trajectories' first ``--length``
states: the autocorrelation at lags 1-10 (and the mean absolute error over them), the spectrum's mean
``|log(P_model / P_data)|`` per band of radial wavenumber (k 1-3, 4-11, 12-21), the std and the kurtosis.  The
training cost (steps, process CPU-minutes) is read from each checkpoint.  Results: ``<out>.md``, ``<out>/results.json``
(a label already there is not sampled again; delete it to redo) and ``<out>/statistics_<labels>.png`` (the
priors sampled in that run against the data).  One torch thread;
seconds are process CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import torch  # noqa: E402

import moldiff  # noqa: E402
from benchmarks.harness import machine  # noqa: E402
from moldiff.training.checkpoint import load_checkpoint  # noqa: E402
from physics.fields.statistics import field_statistics, spectrum_band_errors, statistics_figure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BANDS = [1, 4, 12, 22]
LAGS = 10


def describe(ckpt: Path) -> dict:
    """Backbone, window, steps and training CPU-minutes of a checkpoint."""
    state = load_checkpoint(ckpt)
    cfg, lineage = state["config"], state.get("lineage") or {}
    cpu = 60 * lineage["cpu_hours"] if lineage.get("cpu_hours") else None
    model = cfg["model"]
    return dict(task=cfg["task"], backbone=model["backbone"], options=model.get("options", {}),
                window=2 * model["window"] + 1, step=int(state["step"]), cpu_minutes=cpu)


def statistics(samples: torch.Tensor, data: torch.Tensor) -> dict:
    s, d = field_statistics(samples, LAGS), field_statistics(data, LAGS)
    acf_err = np.abs(s.autocorrelation[1:] - d.autocorrelation[1:])
    return dict(autocorrelation=s.autocorrelation[1:].tolist(), autocorrelation_data=d.autocorrelation[1:].tolist(),
                autocorrelation_error=float(acf_err.mean()), lag1_error=float(acf_err[0]),
                spectrum=spectrum_band_errors(s.spectrum, d.spectrum, BANDS), std=s.std, std_data=d.std,
                kurtosis=s.kurtosis, kurtosis_data=d.kurtosis), s, d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("priors", nargs="+", help="LABEL=CHECKPOINT")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--length", type=int, default=32)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "kolmogorov_priors")
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    figure_stats = {}
    for item in args.priors:
        label, _, ckpt = item.partition("=")
        if not ckpt:
            raise SystemExit(f"give LABEL=CHECKPOINT, got {item!r}")
        task, model = moldiff.load_model(ckpt, overrides=[f"sampler.steps={args.steps}"], progress=False)
        data = task.trajectories("test")[:, : args.length]
        if label in results:
            continue
        t0 = time.process_time()
        samples = task.sample(model, args.samples, generator=torch.Generator().manual_seed(0), length=args.length,
                              progress=False).cpu()
        seconds = time.process_time() - t0
        if not torch.isfinite(samples).all():
            raise FloatingPointError(f"{label}: non-finite samples")
        row, st, sd = statistics(samples, data)
        figure_stats[label] = st
        figure_stats.setdefault("data (test)", sd)
        results[label] = dict(checkpoint=str(ckpt), **describe(Path(ckpt)), **row, seconds=seconds,
                              samples=args.samples, length=args.length, steps=args.steps)
        path.write_text(json.dumps(results, indent=1))
        print(label, {k: results[label][k] for k in ("step", "lag1_error", "autocorrelation_error", "spectrum", "std")},
              flush=True)
    if figure_stats:  # the priors sampled in this run (a figure per run: earlier runs' figures are kept)
        labels = "_".join(k for k in figure_stats if k != "data (test)")
        statistics_figure(figure_stats, 0.2, "Kolmogorov priors against the test split").savefig(
            args.out / f"statistics_{labels}.png", dpi=100)
    write_table(args.out, results)


def write_table(out: Path, results: dict) -> None:
    first = next(iter(results.values()))
    lines = ["# Kolmogorov trajectory priors: time structure and spectrum (issue 29)", "",
             f"Machine: {machine()}.  Command: `python -m "
             f"benchmarks.kolmogorov_priors LABEL=CKPT ...` ({first['samples']} samples of "
             f"{first['length']} states, {first['steps']} predictor-corrector steps).  Data: the 8 test trajectories' "
             f"first {first['length']} states.  Autocorrelation error: mean |model - data| over lags 1-10; "
             "spectrum error: mean |log(P_model / P_data)| over the band (0.05 is about 5 %).  Aims: lag-1 within "
             "0.05, autocorrelation error <= 0.05, spectrum errors <= 0.05 for k 1-3 and 4-11.", "",
             "| prior | backbone | window | steps | training CPU-min | lag 1 (data) | lag-1 error | autocorr. error "
             "1-10 | spectrum k 1-3 | k 4-11 | k 12-21 | std (data) | kurtosis (data) | sampling CPU s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, r in results.items():
        opts = r["options"]
        backbone = r["backbone"] + (f" {opts.get('attention', 'joint')}" if r["backbone"] == "transformer" else
                                    f" {opts.get('channels')}")
        cpu = "" if r["cpu_minutes"] is None else f"{r['cpu_minutes']:.0f}"
        sp = r["spectrum"]
        lines.append(f"| {label} | {backbone} | {r['window']} | {r['step']} | {cpu} | {r['autocorrelation'][0]:.3f} "
                     f"({r['autocorrelation_data'][0]:.3f}) | {r['lag1_error']:.3f} | {r['autocorrelation_error']:.3f} | "
                     f"{sp.get('1-3', float('nan')):.3f} | {sp.get('4-11', float('nan')):.3f} | "
                     f"{sp.get('12-21', float('nan')):.3f} | {r['std']:.2f} ({r['std_data']:.2f}) | "
                     f"{r['kurtosis']:.2f} ({r['kurtosis_data']:.2f}) | {r['seconds']:.0f} |")
    lines += ["", "Autocorrelation by lag (model / data):", "",
              "| prior | " + " | ".join(f"lag {k}" for k in range(1, LAGS + 1)) + " |", "|---|" + "---|" * LAGS]
    for label, r in results.items():
        lines.append(f"| {label} | " + " | ".join(f"{a:.2f} / {b:.2f}" for a, b in
                                                  zip(r["autocorrelation"], r["autocorrelation_data"])) + " |")
    (out.parent / f"{out.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
