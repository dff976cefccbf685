"""Train a score-SDE on a 2D target, then sample it with every sampler and compare to held-out data.

    python examples/toy2d_score_sde.py                      # ~3 min on a laptop CPU
    python examples/toy2d_score_sde.py --steps 300 --tiny   # a few seconds

Everything is also tracked in MLflow: ``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db``.
"""

import argparse
from pathlib import Path

import moldiff
from moldiff.metrics import wasserstein2
from physics.toy2d import sample_target
from physics.toy2d.plots import scatter_grid

ap = argparse.ArgumentParser()
ap.add_argument("--target", default="two_moons", choices=["8gaussians", "two_moons", "checkerboard"])
ap.add_argument("--process", default="vp", choices=["vp", "subvp", "ve", "ddpm"])
ap.add_argument("--steps", type=int, default=4000)
ap.add_argument("--runs-root", default="runs")
ap.add_argument("--tiny", action="store_true", help="small network and evaluation (for tests)")
args = ap.parse_args()

config = Path(__file__).resolve().parents[1] / "configs" / f"toy2d_{args.process}.yaml"
overrides = [f"data.target={args.target}", f"train.steps={args.steps}", f"runs_root={args.runs_root}",
             f"name=example_{args.process}_{args.target}"]
if args.tiny:
    overrides += ["model.width=32", "model.depth=2", "eval.n_samples=200", "eval.steps=20",
                  "eval.nll_points=20", "train.ema_decay=0.9", "data.n_train=2000"]
cfg = moldiff.load_config(config, overrides)
result = moldiff.train(cfg, overwrite=True)  # a re-run of the example starts over
print(f"trained {result.step} steps; checkpoint {result.checkpoint}")

# Sample the trained model with three samplers through the Python API and score them ourselves.
import torch

held_out = sample_target(args.target, 1000, torch.Generator().manual_seed(123))
panels = {"data": held_out}
for sampler, steps in [("euler_maruyama", 200), ("ode_heun", 50), ("ode_rk45", 1)]:
    x = moldiff.sample(result.checkpoint, 1000, sampler=sampler, steps=steps, seed=1, progress=False)
    w2 = wasserstein2(x, held_out)
    print(f"{sampler:>15}: W2 to held-out data = {w2:.3f}")
    panels[f"{sampler} (W2 {w2:.2f})"] = x
out = Path(args.runs_root) / f"example_{args.process}_{args.target}.png"
scatter_grid(panels, title=f"{args.target}, {args.process}").savefig(out, dpi=110)
print(f"figure: {out}")
