"""Cost of one network call of the Lorenz trajectory prior on 64 trajectories x 128 states (7,936 windows of 5
states): per-window time embedding (the old path) against one embedding per trajectory (``grouped``).

    python -m benchmarks.local_score_speed          # prints a markdown row per path
"""

from __future__ import annotations

import platform
import time

import torch

from physics.fields.models import FlatWindow, LocalScoreNet


def main(repeats: int = 10) -> None:
    torch.manual_seed(0)
    backbone = FlatWindow(5 * 3, width=256, depth=4)
    net = LocalScoreNet(backbone, 2)
    x, t = torch.randn(64, 128, 3), torch.rand(64)
    print(f"{platform.machine()} CPU, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}\n")
    print("| path | forward (ms) | forward + vector-Jacobian product (ms) |\n|---|---|---|")
    for grouped in (False, True):
        backbone.grouped = grouped
        with torch.no_grad():
            net(x, t)
            t0 = time.perf_counter()
            for _ in range(repeats):
                net(x, t)
            fwd = (time.perf_counter() - t0) / repeats
        xg = x.clone().requires_grad_(True)
        t0 = time.perf_counter()
        for _ in range(repeats):
            torch.autograd.grad(net(xg, t).sum(), xg)
        both = (time.perf_counter() - t0) / repeats
        name = "one time embedding per trajectory" if grouped else "one time embedding per window"
        print(f"| {name} | {fwd * 1000:.0f} | {both * 1000:.0f} |")


if __name__ == "__main__":
    main()
