"""The shared core without a network: sample a Gaussian with its exact score and check the answers.

For a Gaussian target the score of every noised marginal is known in closed form, so samplers and the
probability-flow likelihood can be compared with exact values.

    python examples/gaussian_samplers.py
"""

import math

import torch

from moldiff.diffusion import VPSDE, Denoiser, get_sampler, log_likelihood, time_grid

mu = torch.tensor([2.0, -1.0], dtype=torch.float64)
var = torch.tensor([0.5, 2.0], dtype=torch.float64)
process = VPSDE()


def exact_score(x, t):
    """Score of p_t = N(alpha mu, alpha^2 var + sigma^2); ``x [B, 2]``, ``t [B]``."""
    alpha, sigma = process.marginal(t)
    return -(x - alpha[:, None] * mu) / (alpha[:, None] ** 2 * var + sigma[:, None] ** 2)


model = Denoiser(exact_score, process, kind="score")
g = torch.Generator().manual_seed(0)
x1 = process.prior_sample(torch.zeros(20_000, 2, dtype=torch.float64), generator=g)

for name, steps in [("ancestral", 500), ("euler_maruyama", 500), ("pc", 250), ("ode_heun", 100), ("ode_rk45", 1)]:
    ts = time_grid(process, steps, dtype=torch.float64)
    model.nfe = 0
    x = get_sampler(name)(model, x1, ts, generator=g, progress=False)
    print(f"{name:>15}  mean {x.mean(0).numpy().round(3)}  var {x.var(0).numpy().round(3)}  NFE {model.nfe}")
print(f"{'exact':>15}  mean {mu.numpy()}  var {var.numpy()}")

x = mu + var.sqrt() * torch.randn(5, 2, generator=g, dtype=torch.float64)
res = log_likelihood(model, x, divergence="exact")
exact = (-0.5 * (x - mu) ** 2 / var - 0.5 * torch.log(2 * math.pi * var)).sum(-1)
print("PF-ODE log-likelihood:", res.logp.numpy().round(3))
print("exact log-density:    ", exact.numpy().round(3))
