"""Cost of latent against pixel trajectory diffusion for fields as the grid grows (issue 17, item 4).

    python -m benchmarks.latent_cost [--grids 64 128 256] [--length 32] [--repeats 3]

For each ``n x n`` grid, with the networks of ``configs/kolmogorov_latent.yaml`` / ``configs/kolmogorov_ae.yaml``
(latent) and the CPU pixel prior of issue 5 (U-Net 16-32-64, one block per level, the 5 states of a window as
channels), at random weights and on random fields (cost does not depend on either):

* one training step (forward, backward, AdamW) at the configs' batch sizes (pixel 16 windows, latent 32);
* one SDA-guided denoiser evaluation of ``--length``-state trajectories (the prior on every window, the coarse
  observation operator -- 4 x 4 block means of every 4th state -- through the decoder for the latent prior, and
  the vector-Jacobian product back to the state); an assimilation with the configs' sampler costs 128 of these
  (64 predictor + 64 corrector steps);
* the peak memory of that evaluation (the bytes autograd saves; unique storages).

The latent grid is ``n / 8``; the transformer's patch stays 2, so its tokens per window grow as ``(n / 16)^2 x 5``
and attention as their square.  Results: ``benchmarks/results/latent_cost.md``, naming the machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from benchmarks.harness import machine

from moldiff.diffusion import Denoiser, GaussianObservation, PosteriorDenoiser
from moldiff.diffusion.processes import VPSDE
from moldiff.nn import FieldAutoencoder, SpaceTimeTransformer, UNet
from physics.assimilation.observations import ObservationOperator
from physics.fields.models import LocalScoreNet, WindowAsChannels

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 5


def _median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.process_time()  # CPU time of this single-threaded process: robust to other jobs on the machine
        fn()
        times.append(time.process_time() - t0)
    return sorted(times)[len(times) // 2]


def _saved_mb(fn) -> float:
    """MB autograd saves for the backward pass of ``fn()`` (unique storages)."""
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values()) / 2**20


def _setting(kind: str, n: int):
    """(prior network over trajectories, state shape, decoder or None, training batch size)."""
    if kind == "pixel":
        net = LocalScoreNet(UNet(WINDOW, WINDOW, channels=(16, 32, 64), blocks_per_level=1), 2)
        return net, (n, n), None, 16
    ae = FieldAutoencoder(1, 16, (16, 32, 64), 1).requires_grad_(False)
    c, h, w = ae.latent_shape(n, n)
    net = LocalScoreNet(SpaceTimeTransformer(WINDOW, c, h, w, patch=2, dim=128, depth=4, heads=4), 2)
    return net, (c, h, w), ae, 32


def measure(kind: str, n: int, length: int, repeats: int) -> dict:
    torch.manual_seed(0)
    net, shape, ae, batch = _setting(kind, n)
    params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    xb, tb = torch.randn(batch, WINDOW, *shape), torch.rand(batch)

    def train_step():
        opt.zero_grad(set_to_none=True)
        (net(xb, tb) - xb).square().mean().backward()
        opt.step()

    op = ObservationOperator((n, n), kind="coarsen", factor=4, every=4)
    decode = (lambda z: z) if ae is None else (lambda z: ae.decode(z.reshape(-1, *shape))[:, 0].reshape(*z.shape[:2], n, n))
    x = torch.randn(1, length, *shape)
    y = torch.randn(1, op.num_observations(length))
    obs = GaussianObservation(y, op, 0.5).through(decode)
    guided = PosteriorDenoiser(Denoiser(net, VPSDE(), kind="eps"), obs, gamma=0.1)
    t = torch.full((1,), 0.5)
    return dict(kind=kind, n=n, shape=shape, params=params, batch=batch,
                train=_median_seconds(train_step, repeats), guided=_median_seconds(lambda: guided.eps(x, t), repeats),
                memory=_saved_mb(lambda: guided.eps(x, t)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grids", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--length", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "latent_cost.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for n in args.grids:
        for kind in ("pixel", "latent"):
            rows.append(measure(kind, n, args.length, args.repeats))
            print(rows[-1], flush=True)
    lines = [f"# Latent against pixel trajectory diffusion: cost as the grid grows (issue 17)", "",
             f"Machine: {machine()}, torch {torch.__version__}, one torch thread, float32.  Command: `python "
             f"benchmarks/latent_cost.py --grids {' '.join(map(str, args.grids))} --length {args.length} --repeats "
             f"{args.repeats}` (median of {args.repeats}; process CPU seconds).  Pixel: the CPU U-Net prior (16-32-64, one block per level, "
             "window of 5 as channels).  Latent: the autoencoder 16-32-64 to 16 channels at n/8 (frozen) and the "
             "transformer (patch 2, dim 128, depth 4, 4 heads) over windows of 5 latent states.  Guided evaluation: "
             f"SDA on one trajectory of {args.length} states with coarse observations (4 x 4 block means of every 4th "
             "state), through the decoder for the latent prior; an assimilation with the configs' sampler is 128 of "
             "them.  Memory: the bytes autograd saves for that evaluation.", "",
             "| grid | prior | state per time | prior parameters | training step (s, batch) | guided evaluation (s) | "
             "assimilation, 128 evaluations (s) | saved activations (MB) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['n']} x {r['n']} | {r['kind']} | {' x '.join(map(str, r['shape']))} | {r['params']:,} | "
                     f"{r['train']:.3f} ({r['batch']}) | {r['guided']:.3f} | {128 * r['guided']:.0f} | {r['memory']:.0f} |")
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
