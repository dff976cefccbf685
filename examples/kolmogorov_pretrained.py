"""Reconstruct a Kolmogorov-flow trajectory from coarse noisy observations with the shipped latent prior, on a
fresh install (no dataset, no training).

    python examples/kolmogorov_pretrained.py                # under a minute on 2 CPU cores
    python examples/kolmogorov_pretrained.py --tiny         # seconds (a short trajectory, few sampler steps)

A new trajectory is simulated with the project's spectral solver (64 x 64 vorticity, Re 1000, spun up onto the
attractor), observed as the prior's config says (4 x 4 block means of every 4th state, noise std 0.5), and
reconstructed by score-based data assimilation (SDA) through the autoencoder's decoder.  Writes
``kolmogorov_pretrained.png`` (truth, observations, posterior mean, a sample, the error) and
``kolmogorov_pretrained.gif``, and prints the RMSE beside climatology's.
"""

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402

import moldiff  # noqa: E402
from physics.fields import plots  # noqa: E402
from physics.fields.api import assimilate  # noqa: E402
from physics.fields.datasets import simulator  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--length", type=int, default=16, help="states to reconstruct (0.2 time units apart)")
ap.add_argument("--members", type=int, default=2, help="posterior samples")
ap.add_argument("--steps", type=int, default=16, help="predictor-corrector steps")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--out", default=".", help="folder for the figure and the GIF")
ap.add_argument("--runs-root", default=None, help="unused (the examples' test passes it to every example)")
ap.add_argument("--tiny", action="store_true", help="8 states, 4 steps, a short spin-up (for tests)")
args = ap.parse_args()
if args.tiny:
    args.length, args.steps = 8, 4
out = Path(args.out)
t_start = time.time()

prior = moldiff.pretrained("kolmogorov")
task = prior.task
print(f"shipped prior: step {prior.step}, latent state {tuple(task.model_shape)} for a {tuple(task.shape)} field; "
      f"observations: {task.operator.describe(args.length)}")

# 1. A trajectory the prior has never seen: a random vortex field spun up onto the attractor, then recorded.
sim, g = simulator(task.spec), torch.Generator().manual_seed(1000 + args.seed)
x0 = sim.advance(sim.random_initial(1, g, dtype=torch.float64), 5.0 if args.tiny else task.spec.spinup)
truth = sim.trajectory(x0, args.length, task.spec.interval)  # [1, L, 64, 64]
y = task.observe(truth, g).float()  # [1, P]: block means of every 4th state, noise std 0.5

# 2. Posterior trajectories given y: SDA through the decoder (moldiff assimilate --pretrained kolmogorov ...).
post = assimilate(None, y, n=args.members, length=args.length, pretrained="kolmogorov", method="sda", seed=args.seed,
                  overrides=[f"sampler.steps={args.steps}"], progress=not args.tiny)  # [1, M, L, 64, 64]

# 3. Scores and pictures.
truth = truth.float()
rmse = float((post[0].mean(0) - truth[0]).square().mean().sqrt())
climatology = float((truth[0] - task.stats[0]).square().mean().sqrt())
print(f"RMSE of the posterior mean {rmse:.2f} (climatology {climatology:.2f}; observation noise "
      f"{task.cfg.observation.noise_std}), {time.time() - t_start:.0f} s wall in all")
title = f"Kolmogorov flow: SDA with the shipped latent prior ({args.members} samples)"
ensembles = {"SDA": post[0].numpy()}
plots.field_figure(truth[0].numpy(), y[0].numpy(), ensembles, task.operator, task.spec.interval, title).savefig(
    out / "kolmogorov_pretrained.png", dpi=80)
plots.write_animation(out / "kolmogorov_pretrained.gif", truth[0].numpy(), ensembles, task.spec.interval, title)
print(f"wrote {out / 'kolmogorov_pretrained.png'} and {out / 'kolmogorov_pretrained.gif'}")
