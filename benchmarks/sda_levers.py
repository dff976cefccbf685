"""One SDA lever at a time on validation windows: the shipped prior with its tuned guidance, the sampler's
predictor-corrector budget varied (issue 13's "more predictor-corrector steps" lever).

    python -m benchmarks.sda_levers --system lorenz63 [--windows 8] [--members 8]

Same validation windows and observations as ``assimilation_smoothers.py`` (first 128 states, seed 11); RMSE after
the 25-state spin-up, spread/error, seconds per window.  Results: ``benchmarks/results/sda_levers.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import moldiff
from physics.assimilation.metrics import score_windows

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [("128 DDIM steps x 1 Langevin corrector (shipped)", 128, 1), ("256 steps x 1", 256, 1),
            ("128 steps x 3 correctors", 128, 3), ("256 steps x 3 correctors", 256, 3)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--system", default="lorenz63", choices=["lorenz63", "lorenz96"])
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--members", type=int, default=8)
    a = ap.parse_args()
    rows = []
    for label, steps, corr in SETTINGS:
        task, model = moldiff.load_model(pretrained=a.system, device="cpu",
                                         overrides=[f"sampler.steps={steps}", f"sampler.corrector_steps={corr}"])
        truth = task.trajectories("valid", progress=False)[: a.windows, :128].double()
        y = task.observe(truth, torch.Generator().manual_seed(11))
        t0 = time.time()
        with torch.no_grad():
            ens = task.assimilate(model, y.float(), n=a.members, length=128, generator=torch.Generator().manual_seed(0),
                                  progress=False).double()
        secs = (time.time() - t0) / a.windows
        observed = torch.zeros(128, dtype=torch.bool)
        observed[task.operator.times(128)] = True
        s = score_windows(ens, truth, observed, 25).summary()
        rows.append((label, s["rmse_after_spinup"], s["spread_error_ratio"], secs))
        print(label, [round(v, 3) for v in s["rmse_after_spinup"]], round(secs, 1), flush=True)
    lines = [f"# SDA levers on {a.system}: the predictor-corrector budget", "",
             f"Measured by `python -m benchmarks.sda_levers --system {a.system} --windows {a.windows} --members "
             f"{a.members}` on {torch.get_num_threads()} torch thread(s), x86_64 CPU, torch {torch.__version__}: "
             "the shipped prior and its guidance (gamma 0.03, weak-constraint std 0.2), validation windows.", "",
             "| sampler | RMSE after spin-up | spread/error | s / window |", "|---|---|---|---|"]
    lines += [f"| {lab} | {r[0]:.3f} ± {r[1]:.3f} | {q[0]:.2f} | {t:.1f} |" for lab, r, q, t in rows]
    out = ROOT / "benchmarks" / "results" / "sda_levers.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
