"""Plug your own equivariant network into moldiff: a 30-line radial message-passing net, trained on DW4 by flow
matching through the config's ``model.backbone: "module:Class"`` -- no moldiff code edited.

    python examples/custom_backbone.py                 # DW4, 3,000 steps: a few minutes on a CPU
    python examples/custom_backbone.py --tiny          # seconds

The contract (``moldiff.nn.backbones``): the class is built as ``Class(num_features, *, hidden, layers, pos_dims,
cond_dim=0)`` and called as ``forward(x [N, pos_dims + F], t [G], batch [N], num_graphs, max_nodes=None,
cond=None) -> [N, pos_dims + F]`` (an equivariant, zero-CoM displacement per node; invariant features).  Check a
new network with ``moldiff.testing.assert_equivariant`` first, as this script does.  The module must be importable
wherever the checkpoint is loaded (here: ``custom_backbone``, this file, found because Python puts the script's
folder on ``sys.path``).
"""

import argparse

import torch
from torch import nn
from torch_geometric.utils import scatter

import moldiff
from moldiff.diffusion.spaces import remove_com
from moldiff.nn.graphs import fully_connected_edges
from moldiff.testing import assert_equivariant


class RadialNet(nn.Module):
    """``x_i <- x_i + mean_j (x_i - x_j) phi_l(|x_i - x_j|^2, t)``, ``layers`` times: E(n)-equivariant (only
    distances enter phi, positions move along difference vectors), any dimension, positions only (F = 0)."""

    def __init__(self, num_features: int, *, hidden: int, layers: int, pos_dims: int, cond_dim: int = 0):
        super().__init__()
        if num_features or cond_dim:
            raise ValueError("RadialNet moves positions only (no features, no condition)")
        self.phi = nn.ModuleList(nn.Sequential(nn.Linear(2, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                               nn.Linear(hidden, 1)) for _ in range(layers))

    def forward(self, x, t, batch, num_graphs, max_nodes=None, cond=None):
        src, dst = fully_connected_edges(batch, num_graphs)
        y = x
        for phi in self.phi:
            diff = y[dst] - y[src]
            w = phi(torch.cat([diff.square().sum(-1, keepdim=True), t[batch[dst], None].to(x.dtype)], -1))
            y = y + scatter(diff * w, dst, dim=0, dim_size=len(x), reduce="mean")
        return remove_com(y - x, batch, num_graphs)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--runs-root", default="runs")
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()

    # 1. the contract, checked in float64 on three random clouds of 4 particles in 2D
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = RadialNet(0, hidden=16, layers=2, pos_dims=2).double().eval()
    batch = torch.arange(3).repeat_interleave(4)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    assert_equivariant(lambda x: net(x, t, batch, 3), torch.randn(12, 2, generator=g, dtype=torch.float64), batch,
                       pos_dims=2, generator=g)
    print("RadialNet: equivariant (rotations, reflections, translations, permutations) in float64")

    # 2. trained by the particles task, picked by name from the config
    overrides = ["model.backbone=custom_backbone:RadialNet", "model.hidden=32", "model.layers=3",
                 f"train.steps={args.steps}", f"runs_root={args.runs_root}", "name=example_custom_backbone"]
    if args.tiny:
        overrides += ["train.steps=30", "model.hidden=8", "model.layers=1", "train.batch_size=32", "eval.n_samples=32",
                      "eval.nll_points=8", "eval.n_reference=500", "eval.likelihood_steps=4", "sampler.steps=4",
                      "data.n_train=2000", "tracking.enabled=false"]
    result = moldiff.train(moldiff.load_config("dw4_otcfm", overrides), overwrite=True, progress=not args.tiny)
    m = result.metrics
    print(f"DW4 with RadialNet, {result.step} steps in {result.seconds:.0f} s: energy W2 {m['energy/w2']:.3f}, "
          f"distance TV {m['distance/tv']:.3f}, ESS {m.get('ess', float('nan')):.3f} (NFE {m['nfe']:.0f})")
