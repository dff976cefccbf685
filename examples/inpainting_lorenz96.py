"""Inpainting with the shipped Lorenz-96 trajectory prior: the middle of a trajectory is missing, the states before
and after it are given; fill the gap by RePaint (replacement with resampling) and by guidance (the known states
as near-noiseless observations, SDA's likelihood), and compare with linear interpolation and climatology.

    python examples/inpainting_lorenz96.py           # about a minute on a CPU
    python examples/inpainting_lorenz96.py --tiny    # seconds (short trajectory, few steps)

The same two calls inpaint any state the core handles -- pixels of a field, atoms of a point cloud: a ``mask`` of
the known entries and their values (:mod:`moldiff.diffusion.inpainting`).
"""

import argparse

import torch

import moldiff
from moldiff.diffusion import PosteriorDenoiser, inpainting_observation, sample_repaint, time_grid

ap = argparse.ArgumentParser()
ap.add_argument("--tiny", action="store_true", help="a short trajectory and few sampler steps (for tests)")
ap.add_argument("--runs-root", default="runs", help="unused (the prior ships with moldiff); kept for the test runner")
args = ap.parse_args()

task, model = moldiff.load_model(pretrained="lorenz96", device="cpu")
length, gap, members, steps = (24, (8, 16), 2, 8) if args.tiny else (64, (28, 36), 8, 128)
truth = task.trajectories("test")[:1, :length].double()  # [1, L, 40] in physical units
known = task.normalize(truth).float()[0]  # the prior works in normalised units
mask = torch.ones(length, 40, dtype=torch.bool)
mask[gap[0]:gap[1]] = False  # the missing states
print(f"Lorenz-96, {length} states of 40 variables; states {gap[0]}..{gap[1] - 1} missing")

prior = task.denoiser(model)
g = torch.Generator().manual_seed(0)
x = task.process.prior_sample(torch.zeros(members, length, 40), generator=g)
with torch.no_grad():
    repaint = sample_repaint(prior, x, time_grid(task.process, steps), known=known.expand(members, -1, -1),
                             mask=mask, resample=1 if args.tiny else 4, generator=g, progress=False)
sampler = task.cfg.sampler if not args.tiny else moldiff.config.SamplerConfig(name="ddim", steps=steps)
guided = PosteriorDenoiser(prior, inpainting_observation(known, mask, noise_std=0.05), gamma=0.03)
sda = sampler.run(guided, x, generator=g, progress=False).detach()

gap_truth = truth[0, gap[0]:gap[1]]
w = torch.linspace(0, 1, gap[1] - gap[0] + 2, dtype=torch.float64)[1:-1, None]
linear = (1 - w) * truth[0, gap[0] - 1] + w * truth[0, gap[1]]  # straight line between the known neighbours
rows = {"RePaint": task.denormalize(repaint.double()).mean(0)[gap[0]:gap[1]],
        "guided (SDA)": task.denormalize(sda.double()).mean(0)[gap[0]:gap[1]],
        "linear interpolation": linear, "climatology": task.stats[0].double().expand_as(gap_truth)}
for name, est in rows.items():
    print(f"{name:22s} RMSE over the gap {float((est - gap_truth).square().mean().sqrt()):.3f}")
