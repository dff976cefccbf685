"""Twin experiments with the ensemble Kalman filters of ``physics.assimilation.enkf`` on Lorenz-63 and Lorenz-96.

    python -m benchmarks.enkf_lorenz [--quick] [--out benchmarks/results/enkf_lorenz.md]

A truth run of our own simulators (``physics.fields.lorenz``, RK4 step 0.01 unless stated) is observed with
Gaussian noise; each filter starts from a climatological ensemble (independent spun-up states) and cycles over all
observation times.  Scores are time averages over the cycles after a burn-in: analysis RMSE of the ensemble mean
(``sqrt(mean_j (xbar_j - x_j)^2)`` at each analysis, then averaged over time), ensemble spread (same averaging),
fair CRPS, and the forecast RMSE just before the analysis.  Inflation (multiplying the anomalies) and the
Gaspari-Cohn localisation half-width ``c`` are tuned on a grid run as one batch of filters, every grid point as
``replicas`` independent filters (own climatological initial ensemble and random stream); the table reports the grid
point with the best replica-mean analysis RMSE on the scored window itself (no separate validation run), with the
range over the replicas; the grid tables show all points.  An inflation at the edge of stability diverges in some
replicas, so picking by the replica mean avoids reporting a lucky run.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from physics.assimilation.enkf import ring_localization, run_filter
from physics.assimilation.metrics import crps_ensemble
from physics.fields.lorenz import LorenzSystem, get_lorenz

ROOT = Path(__file__).resolve().parents[1]
F64 = torch.float64


@dataclass
class Setting:
    """A twin experiment: system, observation network and schedule."""

    key: str
    title: str
    system: LorenzSystem
    H: Tensor  # [P, D]
    obs_std: float
    interval: float  # MTU between observations (= between states)
    burn_in: int
    cycles: int  # scored cycles after the burn-in
    seed: int = 0

    @property
    def num_states(self) -> int:
        return self.burn_in + self.cycles


@dataclass
class Config:
    """A filter and its tuning grid (inflation x localisation half-width; ``None`` = no localisation)."""

    method: str
    members: int
    inflations: list[float]
    radii: list[float | None] = field(default_factory=lambda: [None])
    tune_cycles: int | None = None  # tune on a shorter run first, then run the best point for the full length
    tune_burn_in: int = 300
    rotate: bool = False  # ETKF: random mean-preserving rotation of the analysis anomalies
    replicas: int = 3  # independent filters per grid point (own initial ensemble and random stream)

    @property
    def label(self) -> str:
        if self.method == "enkf":
            return "EnKF (stochastic)"
        name = "LETKF" if self.radii != [None] else "ETKF"
        return name + (" + rotation" if self.rotate else "")


@dataclass
class Score:
    """Time-averaged scores of one grid point, averaged over its replicas (``rmse_min/max``: their range)."""

    inflation: float
    radius: float | None
    rmse: float
    spread: float
    crps: float
    forecast_rmse: float
    rmse_min: float
    rmse_max: float


@dataclass
class Row:
    setting: Setting
    config: Config
    best: Score
    grid: list[Score]
    grid_cycles: int
    seconds: float
    clim_std: float


# ----------------------------------------------------------------------------------------------------------------
# experiment pieces


def lorenz96_dt(dt: float) -> LorenzSystem:
    base = get_lorenz("lorenz96")
    return LorenzSystem(base.name, base.dim, dt=dt, params=base.params)


def select(dim: int, idx: list[int]) -> Tensor:
    """``H`` ``[P, D]`` observing the variables ``idx``."""
    H = torch.zeros(len(idx), dim, dtype=F64)
    H[torch.arange(len(idx)), torch.tensor(idx)] = 1.0
    return H


def spun_up(system: LorenzSystem, batch: int, seed: int, duration: float = 30.0) -> Tensor:
    """``[batch, D]`` independent states on the attractor (random start, ``duration`` MTU of spin-up)."""
    g = torch.Generator().manual_seed(seed)
    return system.advance(system.random_state(batch, g, dtype=F64), duration)


def twin(setting: Setting) -> tuple[Tensor, Tensor]:
    """Truth ``[T, D]`` and noisy observations ``[T, P]`` at every state."""
    x0 = spun_up(setting.system, 1, seed=1000 + setting.seed)[0]
    truth = setting.system.trajectory(x0, setting.num_states, setting.interval)
    g = torch.Generator().manual_seed(2000 + setting.seed)
    noise = setting.obs_std * torch.randn(setting.num_states, setting.H.shape[0], generator=g, dtype=F64)
    return truth, truth @ setting.H.T + noise


def run_grid(setting: Setting, config: Config, truth: Tensor, ys: Tensor, num_states: int,
             grid: list[tuple[float, float | None]], burn_in: int, replicas: int) -> list[Score]:
    """Run every (inflation, radius) of ``grid`` ``replicas`` times as one batch ``[B * R, M, D]`` of filters over the
    first ``num_states`` states; scores over the states from ``burn_in`` on, averaged over the replicas.

    Replica ``r`` of every grid point starts from the same initial ensemble (number ``r``), so grid points are
    compared on equal terms; replicas differ in their initial ensemble and random stream."""
    dim, m, b = setting.system.dim, config.members, len(grid) * replicas
    starts = spun_up(setting.system, replicas * m, seed=3000 + setting.seed).reshape(replicas, m, dim)
    ens0 = starts.repeat(len(grid), 1, 1)  # [B * R, M, D], grid-point major
    points = [pt for pt in grid for _ in range(replicas)]
    inflation = torch.tensor([infl for infl, _ in points], dtype=F64)
    radii = [r for _, r in points]
    if all(r is None for r in radii):
        localization = None
    elif any(r is None for r in radii):
        raise ValueError("a grid mixes localised and unlocalised filters")
    else:
        tapers = {r: ring_localization(dim, r) for r in set(radii)}
        localization = torch.stack([tapers[r] for r in radii])
    crps_sum = torch.zeros(b, dtype=F64)

    def score_crps(k: int, ens: Tensor) -> None:
        if k >= burn_in:
            crps_sum.add_(crps_ensemble(ens, truth[k], member_dim=1, reduction="none").mean(-1))

    res = run_filter(
        setting.system.advance, ens0, (torch.arange(num_states), ys[:num_states]), setting.H, setting.obs_std,
        interval=setting.interval, num_states=num_states, method=config.method, inflation=inflation,
        localization=localization, rotate=config.rotate, generator=torch.Generator().manual_seed(4000 + setting.seed),
        callback=score_crps,
    )
    window = slice(burn_in, num_states)
    n = num_states - burn_in
    per_filter = torch.stack([
        (res.mean[:, window] - truth[window]).pow(2).mean(-1).sqrt().mean(-1),
        res.spread[:, window].mean(-1),
        crps_sum / n,
        (res.forecast_mean[:, window] - truth[window]).pow(2).mean(-1).sqrt().mean(-1),
    ], -1).reshape(len(grid), replicas, 4)  # [grid, R, (rmse, spread, crps, forecast rmse)]
    mean = per_filter.mean(1)
    return [Score(infl, r, *(float(v) for v in mean[i]), float(per_filter[i, :, 0].min()),
                  float(per_filter[i, :, 0].max())) for i, (infl, r) in enumerate(grid)]


def evaluate(setting: Setting, config: Config, truth: Tensor, ys: Tensor, clim_std: float) -> Row:
    grid = list(itertools.product(config.inflations, config.radii))
    t0 = time.time()
    if config.tune_cycles is None:
        scores = run_grid(setting, config, truth, ys, setting.num_states, grid, setting.burn_in, config.replicas)
        grid_cycles = setting.cycles
        best = min(scores, key=_key)
    else:  # tune on a shorter run (shorter burn-in too), then run the chosen point for the full length
        tune_burn_in = min(setting.burn_in, config.tune_burn_in)
        grid_cycles = min(config.tune_cycles, setting.cycles)
        scores = run_grid(setting, config, truth, ys, tune_burn_in + grid_cycles, grid, tune_burn_in, 1)
        pick = min(scores, key=_key)
        best = run_grid(setting, config, truth, ys, setting.num_states, [(pick.inflation, pick.radius)],
                        setting.burn_in, config.replicas)[0]
    return Row(setting, config, best, scores, grid_cycles, time.time() - t0, clim_std)


def _key(s: Score) -> float:
    return s.rmse if math.isfinite(s.rmse) else math.inf


# ----------------------------------------------------------------------------------------------------------------
# the benchmark


def settings_and_configs(quick: bool) -> list[tuple[Setting, list[Config]]]:
    l63, l96 = get_lorenz("lorenz63"), get_lorenz("lorenz96")
    scale = 0.2 if quick else 1.0

    def n(cycles: int) -> int:
        return max(100, int(cycles * scale))

    every = select(40, list(range(40)))
    dense96 = Setting("l96", "Lorenz-96 (N = 40, F = 8), all 40 variables observed every 0.05 MTU, R = I",
                      l96, every, 1.0, 0.05, burn_in=n(1000), cycles=n(5000))
    dense96_dt05 = Setting("l96_dt05", "Lorenz-96 as above but RK4 step 0.05 (one step per cycle)",
                           lorenz96_dt(0.05), every, 1.0, 0.05, burn_in=n(1000), cycles=n(5000))
    dense63 = Setting("l63", "Lorenz-63, x, y, z observed every 0.25 MTU, R = 2 I",
                      l63, select(3, [0, 1, 2]), math.sqrt(2.0), 0.25, burn_in=n(200), cycles=n(2000))
    sparse96 = Setting("l96_sparse", "Lorenz-96, every 4th variable (10 of 40) observed every 0.2 MTU, R = I",
                       l96, select(40, list(range(0, 40, 4))), 1.0, 0.2, burn_in=n(500), cycles=n(2000))
    sparse63 = Setting("l63_sparse", "Lorenz-63, only x observed every 0.5 MTU, R = 2",
                       l63, select(3, [0]), math.sqrt(2.0), 0.5, burn_in=n(200), cycles=n(1000))
    infl63 = [1.0, 1.02, 1.05, 1.1, 1.2]
    return [
        (dense96, [
            Config("etkf", 40, [1.0, 1.01, 1.02, 1.03, 1.05]),
            Config("enkf", 40, [1.02, 1.04, 1.06, 1.08, 1.1]),
            Config("enkf", 20, [1.1, 1.2, 1.3]),
            Config("enkf", 20, [1.02, 1.04, 1.07], radii=[4.0, 6.0, 10.0, 15.0]),
            Config("etkf", 20, [1.0, 1.02, 1.04], radii=[6.0, 12.0, 20.0], tune_cycles=n(1000),
                   tune_burn_in=n(300)),
        ]),
        (dense96_dt05, [Config("etkf", 40, [1.0, 1.01, 1.02, 1.03])]),
        (dense63, [
            *(Config("enkf", m, infl63) for m in (10, 20, 50)),
            *(Config("etkf", m, infl63, rotate=True) for m in (10, 20, 50)),
            *(Config("etkf", m, infl63) for m in (10, 50)),
        ]),
        (sparse96, [
            Config("enkf", 40, [1.02, 1.05, 1.1], radii=[4.0, 6.0, 10.0]),
            Config("etkf", 40, [1.05, 1.1, 1.2], rotate=True),
            Config("etkf", 40, [1.02, 1.05, 1.1], radii=[4.0, 6.0], tune_cycles=n(500),
                   tune_burn_in=n(300)),
        ]),
        (sparse63, [Config("enkf", 20, infl63), Config("etkf", 20, infl63, rotate=True)]),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a fifth of the cycles (a smoke run, ~3-4 min)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "enkf_lorenz.md"))
    ap.add_argument("--only", nargs="*", default=None, help="setting keys to run (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(1)

    rows: list[Row] = []
    t_start = time.time()
    for setting, configs in settings_and_configs(args.quick):
        if args.only and setting.key not in args.only:
            continue
        truth, ys = twin(setting)
        scored = truth[setting.burn_in:]
        clim_std = float((scored - scored.mean(0)).pow(2).mean().sqrt())
        for config in configs:
            row = evaluate(setting, config, truth, ys, clim_std)
            rows.append(row)
            b = row.best
            print(f"{setting.key:11s} {config.label} M={config.members:3d} infl={b.inflation:.2f} c={b.radius} "
                  f"rmse={b.rmse:.3f} spread={b.spread:.3f} crps={b.crps:.3f} ({row.seconds:.0f} s)", flush=True)
            write(args, rows, time.time() - t_start)


# ----------------------------------------------------------------------------------------------------------------
# report


CONTEXT = [
    "## Reading the tables",
    "",
    "* Baselines: guessing the climatological mean scores the climatological std (3.6 for Lorenz-96, 8.5 for "
    "Lorenz-63); the observations alone score their error std (1 for Lorenz-96, 1.41 for Lorenz-63) on the "
    "observed variables. A filter is useful below both.",
    "* Lorenz-96 with every variable observed every 0.05 MTU and R = I is the standard benchmark of Sakov & Oke "
    "(2008) and DAPPER, where well-tuned EnKF/ETKF variants reach an analysis RMSE of about 0.18-0.2; the "
    "stochastic EnKF pays for its perturbed observations with a somewhat higher RMSE than the square-root filter "
    "at the same ensemble size, and without localisation M = 20 < D = 40 needs heavy inflation and stays well "
    "above the localised filters.",
    "* Deterministic square-root filters grow outlier members in strongly nonlinear models when the ensemble is "
    "much larger than the state (Lawson & Hansen 2004; Sakov & Oke 2008, Mon. Wea. Rev.): compare the ETKF with "
    "and without the random mean-preserving rotation on Lorenz-63 at M = 50.",
    "* The non-monotone tuning grids of some Lorenz-63 rows come from rare losses of track (an error burst after "
    "a regime change), which dominate a time-averaged RMSE over a finite window. The sparse settings are "
    "dominated by such bursts: compare the replicas' RMSE range before reading differences between rows.",
    "",
]


def _grid_size(row: Row) -> str:
    c = row.config
    if c.tune_cycles is None:
        return f"{len(row.grid)} x {c.replicas}"
    return f"{len(row.grid)} x 1 (short), then 1 x {c.replicas}"


def _fmt_radius(r: float | None) -> str:
    return "none" if r is None else f"{r:g}"


def write(args, rows: list[Row], total_seconds: float) -> None:
    """Rewrite the results file after every run, so an interrupted benchmark keeps what it measured."""
    cmd = "python -m benchmarks.enkf_lorenz" + (" --quick" if args.quick else "")
    if args.only:
        cmd += " --only " + " ".join(args.only)
    lines = [
        "# Ensemble Kalman filters on Lorenz-63 / Lorenz-96 (twin experiments)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} CPU ({platform.node()}, "
        f"{torch.get_num_threads()} torch thread, 2 cores), torch {torch.__version__}, float64, by `{cmd}` "
        f"({total_seconds / 60:.1f} min in all; 1-min load average {os.getloadavg()[0]:.1f} when written: "
        "other jobs shared the 2 cores, so runtimes are upper bounds).",
        "",
        "Filters: `physics.assimilation.enkf.run_filter` with the stochastic EnKF (perturbed observations, "
        "B-localisation by a Gaspari-Cohn taper on the ring) or the ETKF (symmetric square root; with localisation "
        "the LETKF, R-localisation with the same taper). Truth: one run of `physics.fields.lorenz` after 30 MTU "
        "spin-up; initial ensemble: independent spun-up states (climatology). Multiplicative inflation multiplies "
        "the forecast anomalies. `c` is the Gaspari-Cohn half-width in grid points (zero correlation beyond 2c). "
        "Scores are time averages over the scored cycles after the burn-in: analysis RMSE of the ensemble mean, "
        "spread sqrt(mean variance), fair CRPS (per variable), and the forecast RMSE before each analysis. "
        "Every grid point runs as several replicas (independent climatological initial ensembles and random "
        "streams; replica r starts from the same ensemble at every grid point); scores are replica means and the "
        "best grid point (by mean analysis RMSE on the scored window itself) is reported with the replicas' RMSE "
        "range. LETKF rows are tuned on a shorter single-replica run, then the chosen point is run at full length "
        "with all replicas. Runtime = wall time of the whole grid (batched as one `[B x R, M, D]` tensor), "
        "including the LETKF's final run.",
        "",
    ]
    by_setting: dict[str, list[Row]] = {}
    for row in rows:
        by_setting.setdefault(row.setting.key, []).append(row)
    for key, group in by_setting.items():
        s = group[0].setting
        lines += [
            f"## {s.title}",
            "",
            f"RK4 step {s.system.dt}; burn-in {s.burn_in} cycles, scored {s.cycles} cycles "
            f"({s.cycles * s.interval:g} MTU); observation error std {s.obs_std:.3g}; "
            f"climatological std (RMSE of the climatological mean) **{group[0].clim_std:.2f}**.",
            "",
            "| filter | M | localisation c | inflation | analysis RMSE | replicas' RMSE range | spread | CRPS | "
            "forecast RMSE | grid points x replicas | runtime s |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in group:
            c, b = row.config, row.best
            lines.append(
                f"| {c.label} | {c.members} | {_fmt_radius(b.radius)} | {b.inflation:.2f} | **{b.rmse:.3f}** | "
                f"{b.rmse_min:.3f}-{b.rmse_max:.3f} | {b.spread:.3f} | {b.crps:.3f} | {b.forecast_rmse:.3f} | "
                f"{_grid_size(row)} | {row.seconds:.0f} |")
        lines += ["", "<details><summary>tuning grids (analysis RMSE / spread, replica means)</summary>", ""]
        for row in group:
            c = row.config
            radii = c.radii
            note = (f" (tuned on a shorter run, one replica: {min(s.burn_in, c.tune_burn_in)} burn-in + "
                    f"{row.grid_cycles} scored cycles)" if c.tune_cycles is not None else "")
            lines += [f"{c.label}, M = {c.members}{note}:", "",
                      "| inflation | " + " | ".join(f"c = {_fmt_radius(r)}" for r in radii) + " |",
                      "|---|" + "---|" * len(radii)]
            table = {(g.inflation, g.radius): g for g in row.grid}
            for infl in c.inflations:
                cells = [f"{table[(infl, r)].rmse:.3f} / {table[(infl, r)].spread:.3f}" for r in radii]
                lines.append(f"| {infl:.2f} | " + " | ".join(cells) + " |")
            lines.append("")
        lines += ["</details>", ""]
    lines += CONTEXT
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
