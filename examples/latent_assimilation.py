"""Latent trajectory diffusion for Kolmogorov flow: compress every vorticity field with an autoencoder, learn a
spatio-temporal prior over the latent states, and reconstruct a trajectory from coarse noisy observations through
the decoder.

    python examples/latent_assimilation.py                          # ~1 h on 2 CPU cores (64 x 64 fields)
    python examples/latent_assimilation.py --tiny                   # under a minute (32 x 32 smoke fields)
    python examples/latent_assimilation.py --autoencoder CKPT       # reuse a trained autoencoder

The pieces a researcher touches: the field autoencoder (its reconstruction RMSE, spectrum error and compression),
the latent prior trained from a config through the Python API, unconditional samples decoded to fields, and
posterior sampling conditioned on pixel-space observations through the decoder, y = A(D(z)) + noise, scored
against the truth and climatology.  Tracked in MLflow: ``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db``.
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402

import moldiff  # noqa: E402
from physics.assimilation.metrics import score_ensemble  # noqa: E402
from physics.fields.plots import trajectory_grid  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--ae-minutes", type=float, default=30.0, help="autoencoder training budget (CPU minutes)")
ap.add_argument("--prior-minutes", type=float, default=30.0, help="latent prior training budget (CPU minutes)")
ap.add_argument("--autoencoder", default=None, help="a trained field_autoencoder checkpoint (skips step 1)")
ap.add_argument("--runs-root", default="runs")
ap.add_argument("--tiny", action="store_true", help="smoke dataset, small networks and sampler (for tests)")
args = ap.parse_args()
root = Path(__file__).resolve().parents[1]
common = [f"runs_root={args.runs_root}"]

# 1. The autoencoder: 64 x 64 vorticity -> 4 x 8 x 8 latents (32 x 32 -> 2 x 8 x 8 for --tiny).
ae_ckpt = args.autoencoder
if ae_ckpt is None:
    config = "configs/smoke/kolmogorov_ae.yaml" if args.tiny else "configs/kolmogorov_ae.yaml"
    budget = ["train.steps=20"] if args.tiny else [f"train.max_cpu_minutes={args.ae_minutes}"]
    ae = moldiff.train(moldiff.load_config(root / config, [*common, "name=example_ae", *budget]), overwrite=True,
                       progress=not args.tiny)
    ae_ckpt = ae.checkpoint
    m = ae.metrics
    print(f"autoencoder: compression {m['recon/compression']:.0f}x, reconstruction RMSE {m['recon/rmse']:.3f} "
          f"({m['recon/rmse_over_std']:.1%} of the data std)")

# 2. The latent prior: a transformer over space-time patches of 5 consecutive latent states.
config = "configs/smoke/kolmogorov_latent.yaml" if args.tiny else "configs/kolmogorov_latent.yaml"
budget = ["train.steps=20"] if args.tiny else [f"train.max_cpu_minutes={args.prior_minutes}"]
cfg = moldiff.load_config(root / config, [*common, "name=example_latent", f"latent.autoencoder={ae_ckpt}",
                                          "eval.n_trajectories=0", *budget])
task, model = moldiff.load_model(moldiff.train(cfg, overwrite=True, progress=not args.tiny).checkpoint)
print(f"latent state {tuple(task.model_shape)} for a field of {tuple(task.shape)}")

# 3. Unconditional trajectories, decoded to vorticity fields.
g = torch.Generator().manual_seed(0)
length = 8 if args.tiny else 32
prior = task.sample(model, 2, generator=g, length=length, progress=not args.tiny)
truth = task.trajectories("test")[:1, :length]

# 4. Assimilation through the decoder: coarse noisy observations of a held-out trajectory.
y = task.observe(truth.double(), torch.Generator().manual_seed(1)).float()
op = task.operator
print(f"{y.shape[1]} observations ({op.kind} x{op.factor}, every {op.every} states, noise "
      f"{task.cfg.observation.noise_std}) of a {length}-state trajectory of {truth[0].numel()} values")
members = 2 if args.tiny else 4
for method in ("sda", "dps"):
    post = task.assimilate(model, y, n=members, length=length, method=method, generator=g, progress=not args.tiny)[0]
    s = score_ensemble(post, truth[0])
    print(f"latent {method.upper()}: RMSE {float(s.rmse):.3f}  spread {float(s.spread):.3f}  CRPS {float(s.crps):.3f}")
print(f"climatology RMSE {float((truth - task.stats[0]).square().mean().sqrt()):.3f}")

out = Path(args.runs_root) / "example_latent_kolmogorov.png"
out.parent.mkdir(parents=True, exist_ok=True)
trajectory_grid({"test": truth[0].numpy(), "posterior mean": post.mean(0).numpy(), "prior sample": prior[0].numpy()},
                task.spec.interval, "Kolmogorov flow: truth, latent DPS posterior mean, latent prior sample").savefig(out)
print(f"figure: {out}")
