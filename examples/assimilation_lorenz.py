"""Score-based data assimilation on Lorenz-63: learn a trajectory prior, then reconstruct a trajectory from
sparse noisy observations -- and compare with classical smoothers and filters on the same observations.

    python examples/assimilation_lorenz.py                     # ~15 min on 2 CPU cores
    python examples/assimilation_lorenz.py --steps 40 --tiny   # a few seconds (the smoke dataset)

The pieces a researcher touches: the simulator, the cached dataset, the observation operator, training the
local-score prior from a config through the Python API, posterior sampling (SDA and MMPS), the classical
smoothers (EnKS, iEnKS) and filters (ETKF, particle filter) with the true dynamics, and the scores (RMSE,
spread, CRPS).  Tracked in MLflow: ``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db``.
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import moldiff  # noqa: E402
from physics.assimilation.enkf import run_filter  # noqa: E402
from physics.assimilation.metrics import score_ensemble  # noqa: E402
from physics.assimilation.particle import run_particle_filter  # noqa: E402
from physics.assimilation.smoothers import run_enks, run_ienks  # noqa: E402
from physics.fields.datasets import simulator  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=6000)
ap.add_argument("--runs-root", default="runs")
ap.add_argument("--tiny", action="store_true", help="smoke dataset, small network and sampler (for tests)")
args = ap.parse_args()

# 1. A prior over trajectories: a local score network over 5 consecutive states, trained on Lorenz-63 windows.
config = "configs/smoke/trajectory_lorenz63.yaml" if args.tiny else "configs/lorenz63_sda.yaml"
root = Path(__file__).resolve().parents[1]
cfg = moldiff.load_config(root / config, [f"train.steps={args.steps}", f"runs_root={args.runs_root}",
                                          "name=example_lorenz63", "eval.n_trajectories=0"])
result = moldiff.train(cfg, overwrite=True, progress=not args.tiny)  # a re-run of the example starts over
task, model = moldiff.load_model(result.checkpoint)

# 2. A held-out truth and its observations: all three variables every 5th state (0.25 MTU), noise variance 2.
length = 32 if args.tiny else 128
truth = task.trajectories("test")[:1, :length]
y = task.observe(truth.double(), torch.Generator().manual_seed(0)).float()
print(f"{task.operator.num_observations(length)} observations of a {length}-state trajectory "
      f"({task.operator.kind}, every {task.operator.every} states, noise std {task.cfg.observation.noise_std:.3f})")

# 3. Posterior trajectories by SDA and MMPS; the classical smoothers and filters with the true dynamics, all
#    started from 20 climatological members (random training states) on the same observations.
g = torch.Generator().manual_seed(1)
members = 4 if args.tiny else 16
sda = task.assimilate(model, y, n=members, length=length, method="sda", generator=g, progress=not args.tiny)[0]
mmps = task.assimilate(model, y, n=members, length=length, method="mmps", generator=g, progress=not args.tiny)[0]
sim = simulator(task.spec)
train_states = task.trajectories("train").reshape(-1, 3).double()
ens0 = train_states[torch.randint(0, len(train_states), (20,), generator=g)]
obs = dict(zip(times := task.operator.times(length), task.operator.split(y.double())[0]))
H, noise, kw = task.operator.matrix(torch.float64), task.cfg.observation.noise_std, dict(
    interval=task.spec.interval, num_states=length, keep_ensemble=True)
enks = run_enks(sim.advance, ens0, obs, H, noise, inflation=1.05, **kw).ensemble.transpose(0, 1)
ienks = run_ienks(sim.advance, ens0, obs, H, noise, lag=3, inflation=1.02, **kw).ensemble.transpose(0, 1)
etkf = run_filter(sim.advance, ens0, obs, H, noise, method="etkf", inflation=1.05, **kw).ensemble.transpose(0, 1)
pf0 = train_states[torch.randint(0, len(train_states), (1000,), generator=g)]
pf = run_particle_filter(sim.advance, pf0, obs, H, noise, jitter=0.1, generator=g, **kw).ensemble.transpose(0, 1)
results = {"SDA": sda, "MMPS": mmps, "EnKS": enks, "iEnKS": ienks, "ETKF": etkf, "PF": pf}
for name, ens in results.items():
    s = score_ensemble(ens, truth[0])
    print(f"{name:5s} RMSE {float(s.rmse):.3f}  spread {float(s.spread):.3f}  CRPS {float(s.crps):.3f}")
print(f"climatology RMSE {float((truth - task.stats[0]).square().mean().sqrt()):.3f}")

# 4. A picture: x(t) with the observations and each method's ensemble.
t = torch.arange(length) * task.spec.interval
fig, ax = plt.subplots(figsize=(8, 3))
ax.plot(t, truth[0, :, 0], "k", label="truth")
ax.plot(t[times], task.operator.split(y)[0, :, 0], "r.", label="observed")
for name, ens, color in [("SDA", sda, "tab:blue"), ("iEnKS", ienks, "tab:green"), ("ETKF", etkf, "tab:purple")]:
    ax.plot(t, ens[:, :, 0].T, color=color, alpha=0.3, lw=0.7)
    ax.plot([], [], color=color, label=name)
ax.set_xlabel("time (MTU)")
ax.set_ylabel("x")
ax.legend(fontsize=8)
out = Path(args.runs_root) / "example_lorenz63_assimilation.png"
out.parent.mkdir(parents=True, exist_ok=True)
fig.savefig(out, dpi=110, bbox_inches="tight")
print(f"figure: {out}")
