"""Temporal coherence of trajectory priors (issue 17): does a prior's sample keep the data's correlation between
consecutive states, and does its denoiser use a state's neighbours?

    python -m benchmarks.latent_temporal_coherence CKPT [CKPT ...] [--samples 4] [--steps 32] [--samplers pc]
        [--neighbours] [--out benchmarks/results/latent_gpu_h200/temporal_coherence.json]

For each checkpoint (``trajectory`` or ``latent_trajectory``) and sampler: ``--samples`` unconditional
trajectories of one window (``2k + 1`` states, no composition) and of 16 states, and the autocorrelation of the
decoded fields at lags 0-3 (:func:`~physics.fields.statistics.field_statistics`), beside the test split's.
``--neighbours``: the denoising error of the centre state of real test windows at several diffusion times, with
the real neighbouring states and with those of another trajectory (a network that ignores its neighbours gives
the same error).  Process CPU seconds, one torch thread.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import moldiff
from moldiff.training.checkpoint import load_checkpoint
from physics.fields.statistics import field_statistics

ROOT = Path(__file__).resolve().parents[1]


def neighbour_test(task, model, times=(0.05, 0.2, 0.4, 0.6, 0.8)) -> dict[str, list[float]]:
    """Centre-state eps MSE on real test windows: real neighbours against another trajectory's."""
    w, k = 2 * task.cfg.model.window + 1, task.cfg.model.window
    z = task.normalize(task.trajectories("test")[:, 10 : 10 + w])  # [8, w, ...]
    den, g = task.denoiser(model), torch.Generator().manual_seed(0)
    others = [i for i in range(w) if i != k]
    real, swapped = [], []
    with torch.no_grad():
        for tv in times:
            t = torch.full((len(z),), tv)
            zt, eps = task.process.perturb(z, t, generator=g)
            zs = zt.clone()
            zs[:, others] = zt.roll(1, 0)[:, others]
            real.append(float((den.eps(zt, t) - eps)[:, k].square().mean()))
            swapped.append(float((den.eps(zs, t) - eps)[:, k].square().mean()))
    return {"times": list(times), "real_neighbours": real, "swapped_neighbours": swapped}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--samplers", nargs="+", default=["pc"])
    ap.add_argument("--neighbours", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "latent_gpu_h200" / "temporal_coherence.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = {}
    for ck in args.checkpoints:
        entry = {}
        for sampler in args.samplers:
            task, model = moldiff.load_model(ck, overrides=[f"sampler.name={sampler}", f"sampler.steps={args.steps}"],
                                             device="cpu")
            w = 2 * task.cfg.model.window + 1
            for length in (w, 16):
                t0 = time.process_time()
                x = task.sample(model, args.samples, generator=torch.Generator().manual_seed(0), progress=False,
                                length=length)
                st = field_statistics(x, min(3, length - 1))
                entry[f"{sampler}, {length} states"] = dict(
                    autocorrelation=[round(float(a), 3) for a in st.autocorrelation], std=round(st.std, 3),
                    kurtosis=round(st.kurtosis, 3), cpu_seconds=round(time.process_time() - t0, 1))
                print(ck, sampler, length, entry[f"{sampler}, {length} states"], flush=True)
        if args.neighbours:
            entry["neighbours"] = neighbour_test(task, model)
            print(ck, entry["neighbours"], flush=True)
        entry["step"] = int(load_checkpoint(ck)["step"])
        results[ck] = entry
    data = field_statistics(task.trajectories("test")[:, :16], 3)
    results["test split, 16 states"] = dict(autocorrelation=[round(float(a), 3) for a in data.autocorrelation],
                                            std=round(data.std, 3), kurtosis=round(data.kurtosis, 3))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(results=results, args=vars(args) | {"out": str(args.out)}), indent=1))


if __name__ == "__main__":
    main()
