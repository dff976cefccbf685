"""The LETKF on Kolmogorov flow (issue 29, item 4): a localised ETKF (Gaspari-Cohn R-localisation on the periodic
grid, multiplicative inflation) with the project's spectral simulator as its forecast model, on the observations
of the latent/pixel benchmark (:mod:`benchmarks.latent_assimilation`: the same windows, the same noise seed).

    python -m benchmarks.kolmogorov_letkf check                       # the textbook case
    python -m benchmarks.kolmogorov_letkf tune --setting coarse       # on validation windows
    python -m benchmarks.kolmogorov_letkf test --setting coarse       # the tuned filter on 16 test windows
    python -m benchmarks.kolmogorov_letkf test --setting coarse --count 4   # on the learned priors' 4 windows
    python -m benchmarks.kolmogorov_letkf table                       # benchmarks/results/kolmogorov_letkf.md

* ``check``: every pixel of every state observed with noise 0.1, 2 test windows: the filter must lock on.
* ``tune``: a coordinate search on the first window of each of the 8 validation trajectories -- the radius (grid
  steps) at 32 members and inflation 1.1, then the inflation at the best radius, then the ensemble size -- scored
  by the whole-window RMSE of the ensemble mean (``--short``: the radius, then inflation 1.2 only, 32 members).
* ``test``: the best validation configuration on the 16 test windows (two windows of 32 states from each of the 8
  test trajectories), and climatology; then the smoother on that filter (the LETKS: every analysis also updates the
  earlier states of the window, each grid point with its own transform) with the same settings.

Every run starts from ``M`` random training states (climatology) at the window's first state and sees only past
observations (a filter; SDA, a smoother, sees the whole window): the scores are given for the whole window and
for its second half.  CPU seconds are process seconds on one torch thread, per window.  Results are appended to
``benchmarks/results/kolmogorov_letkf/runs.json`` (a configuration already there is not run again).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.harness import machine
from benchmarks.latent_assimilation import SETTINGS, test_cases
from moldiff.loading import load_config
from physics.assimilation.metrics import score_windows
from physics.fields.statistics import band_rmse
from physics.fields.task import TrajectoryTask

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "kolmogorov_letkf"
LENGTH = 32
BANDS = [0, 4, 12, 22]
RADII, INFLATIONS, MEMBERS = (2.0, 4.0, 8.0), (1.0, 1.05, 1.2, 1.4), (16, 64)
CHECK = ["observation.kind=full", "observation.every=1", "observation.noise_std=0.1"]


def make_task(setting: str, members: int, radius: float, inflation: float) -> TrajectoryTask:
    obs = CHECK if setting == "check" else SETTINGS[setting]
    cfg = load_config(ROOT / "configs" / "kolmogorov_coarse.yaml",
                      [*obs, "eval.methods=[etkf]", f"eval.ensemble={members}", f"eval.localization={radius}",
                       f"eval.inflation={inflation}", f"eval.length={LENGTH}"])
    return TrajectoryTask(cfg)


def run(setting: str, split: str, members: int, radius: float, inflation: float, windows: int, count: int,
        method: str = "etkf") -> dict:
    """One configuration of the LETKF (``etkf``) or of the smoother on it (``enks``, the LETKS) on ``count`` windows
    of ``split``: scores (mean and standard error over windows)."""
    task = make_task(setting, members, radius, inflation)
    truth = test_cases(task, windows, LENGTH, count, split=split)
    y = task.observe(truth.double(), torch.Generator().manual_seed(7919)).float()  # the latent benchmark's y
    observed = torch.zeros(LENGTH, dtype=torch.bool)
    observed[task.operator.times(LENGTH)] = True
    t0 = time.process_time()
    ens = task.run_filter(y, LENGTH, method, torch.Generator().manual_seed(31))  # [B, M, T, H, W]
    seconds = (time.process_time() - t0) / len(truth)
    if not torch.isfinite(ens).all():
        raise FloatingPointError(f"the LETKF diverged ({setting}, M {members}, radius {radius}, inflation {inflation})")
    scores = score_windows(ens, truth, observed, spinup=LENGTH // 2).summary()
    clim = (truth - task.stats[0]).square().flatten(1).mean(1).sqrt()
    error = ens.double().mean(1) - truth.double()
    return dict(setting=setting, split=split, method=method, members=members, radius=radius, inflation=inflation, windows=len(truth),
                rmse=scores["rmse"], rmse_second_half=scores["rmse_after_spinup"], spread=scores["spread"][0],
                crps=scores["crps"], seconds=seconds, climatology=[float(clim.mean()), float(clim.std() / len(clim) ** 0.5)],
                bands=band_rmse(error, BANDS), bands_climatology=band_rmse(truth.double() - task.stats[0].double(), BANDS),
                rmse_per_state=error.square().mean((0, 2, 3)).sqrt().tolist(),
                rmse_windows=error.square().flatten(1).mean(1).sqrt().tolist(), climatology_windows=clim.tolist())


def _load() -> list[dict]:
    path = OUT / "runs.json"
    return json.loads(path.read_text()) if path.exists() else []


def _key(r: dict) -> tuple:
    return (r["setting"], r["split"], r.get("method", "etkf"), r["members"], float(r["radius"]), float(r["inflation"]),
            r["windows"])


def once(setting: str, split: str, members: int, radius: float, inflation: float, windows: int, count: int,
         method: str = "etkf") -> dict:
    """:func:`run`, or its stored result."""
    key = (setting, split, method, members, float(radius), float(inflation), count)
    for r in _load():
        if _key(r) == key:
            return r
    r = run(setting, split, members, radius, inflation, windows, count, method)
    rows = _load() + [r]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "runs.json").write_text(json.dumps(rows, indent=1))
    print(f"{setting} {split} {method} M {members} r {radius} infl {inflation}: RMSE {r['rmse'][0]:.3f} ± {r['rmse'][1]:.3f} "
          f"(second half {r['rmse_second_half'][0]:.3f}), spread {r['spread']:.3f}, {r['seconds']:.1f} CPU s/window",
          flush=True)
    return r


def best(setting: str) -> dict:
    rows = [r for r in _load() if r["setting"] == setting and r["split"] == "valid" and r.get("method", "etkf") == "etkf"]
    if not rows:
        raise SystemExit(f"no validation runs for {setting}: run `tune --setting {setting}` first")
    return min(rows, key=lambda r: r["rmse"][0])


def tune(setting: str, short: bool = False) -> None:
    """The coordinate search; ``short``: the radius, then inflation 1.2 only, at 32 members."""
    for r in RADII:
        once(setting, "valid", 32, r, 1.1, 1, 8)
    radius = best(setting)["radius"]
    for infl in (1.2,) if short else INFLATIONS:
        once(setting, "valid", 32, radius, infl, 1, 8)
    b = best(setting)
    for m in () if short else MEMBERS:
        once(setting, "valid", m, b["radius"], b["inflation"], 1, 8)
    b = best(setting)
    print(f"best on validation: M {b['members']}, radius {b['radius']}, inflation {b['inflation']}")


def table() -> None:
    rows = _load()
    f = lambda v: f"{v[0]:.3f} ± {v[1]:.3f}"  # noqa: E731
    lines = ["# The LETKF on Kolmogorov flow (issue 29)", "",
             f"Machine: {machine()}.  Produced by "
             "`python -m benchmarks.kolmogorov_letkf check|tune|test|table` (see its docstring).  A localised ETKF "
             "(Gaspari-Cohn R-localisation on the periodic 64 x 64 grid, radius c in grid steps; multiplicative "
             "inflation of the forecast anomalies) with the spectral simulator as its model, started from M random "
             "training states at each window's first state.  Windows of 32 states (6.4 time units); mean ± standard "
             "error over windows; vorticity units (data std about 4.7).  A filter sees only past observations: the "
             "second half is its spun-up score.", "",
             "| setting | split | method | M | radius | inflation | windows | RMSE | RMSE, second half | spread / error (2nd "
             "half) | CRPS (2nd half) | climatology | CPU s / window |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {"check": 0, "coarse": 1, "sparse": 2}
    for r in sorted(rows, key=lambda r: (order.get(r["setting"], 9), r["split"] != "test", r["members"], r["radius"],
                                         r["inflation"])):
        name = {"etkf": "LETKF", "enks": "LETKS"}[r.get("method", "etkf")]
        lines.append(f"| {r['setting']} | {r['split']} | {name} | {r['members']} | {r['radius']:g} | {r['inflation']:g} | "
                     f"{r['windows']} | {f(r['rmse'])} | {f(r['rmse_second_half'])} | "
                     f"{r['spread']:.2f} / {r['rmse_second_half'][0]:.2f} = {r['spread'] / r['rmse_second_half'][0]:.2f} | "
                     f"{f(r['crps'])} | {f(r['climatology'])} | {r['seconds']:.1f} |")
    tests = [r for r in rows if r["split"] == "test" and r["setting"] != "check" and r["windows"] >= 16]
    if tests:
        names = list(tests[0]["bands"])
        lines += ["", "RMSE per band of radial wavenumber k of the ensemble mean's error (whole window; the squares "
                  "sum to the MSE) on the 16 test windows, against climatology's:", "",
                  "| setting | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for r in tests:
            name = {"etkf": "LETKF", "enks": "LETKS"}[r.get("method", "etkf")]
            lines.append(f"| {r['setting']} {name} | " + " | ".join(f"{r['bands'][n]:.3f}" for n in names) + " |")
            if r.get("method", "etkf") == "etkf":
                lines.append(f"| {r['setting']} climatology | " + " | ".join(f"{r['bands_climatology'][n]:.3f}"
                                                                          for n in names) + " |")
    lines += paired_table(rows)
    (OUT.parent / "kolmogorov_letkf.md").write_text("\n".join(lines) + "\n")


def paired_table(rows: list[dict]) -> list[str]:
    """The learned prior's windows (``benchmarks/results/kolmogorov_assimilation_<setting>/results.json``, written by
    :mod:`benchmarks.latent_assimilation` with ``--windows 2``) against climatology and the LETKF / LETKS on the
    same first windows and observations: per-window RMSE, mean ± standard error, and paired differences."""
    import statistics

    out = []
    for setting in ("coarse", "sparse"):
        path = OUT.parent / f"kolmogorov_assimilation_{setting}" / "results.json"
        if not path.exists():
            continue
        learned = [r for r in json.loads(path.read_text())["rows"] if "rmse_windows" in r]
        n = min((len(r["rmse_windows"]) for r in learned), default=0)
        filters = {}
        for r in rows:
            if r["setting"] == setting and r["split"] == "test" and len(r.get("rmse_windows", [])) >= n > 0:
                name = {"etkf": "LETKF", "enks": "LETKS"}[r.get("method", "etkf")]
                if name not in filters or r["windows"] < filters[name]["windows"]:
                    filters[name] = r
        if not filters:
            continue
        methods = {("climatology" if r["method"] == "climatology" else f"{r['prior']} prior, {r['method'].upper()}"):
                   r["rmse_windows"][:n] for r in learned}
        methods.update({f"{k} (M {r['members']}, radius {r['radius']:g}, inflation {r['inflation']:g})":
                        r["rmse_windows"][:n] for k, r in sorted(filters.items())})
        ms = lambda v: f"{statistics.mean(v):.3f} ± {statistics.stdev(v) / len(v) ** 0.5:.3f}"  # noqa: E731
        clim = methods["climatology"]
        out += ["", f"**{setting}: the learned prior against the filters on the same {n} test windows** (the first "
                f"{n} of the 16; the same observations). Gain: climatology's RMSE minus the method's, paired by window "
                "(mean ± standard error, and that mean in standard errors).", "",
                "| method | RMSE | gain over climatology | in standard errors |", "|---|---|---|---|"]
        for name, v in methods.items():
            if name == "climatology":
                out.append(f"| climatology | {ms(v)} | | |")
                continue
            gain = [c - x for c, x in zip(clim, v)]
            se = statistics.stdev(gain) / len(gain) ** 0.5
            out.append(f"| {name} | {ms(v)} | {ms(gain)} | {statistics.mean(gain) / se:.1f} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["check", "tune", "test", "table"])
    ap.add_argument("--setting", choices=sorted(SETTINGS), default="coarse")
    ap.add_argument("--short", action="store_true", help="tune: the radius and one more inflation only (32 members)")
    ap.add_argument("--count", type=int, default=16, help="test: the first COUNT test windows (the learned priors' "
                    "benchmark with --trajectories COUNT --windows 2 sees the same windows and observations)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.what == "check":
        once("check", "test", 32, 2.0, 1.05, 1, 2)
    elif args.what == "tune":
        tune(args.setting, args.short)
    elif args.what == "test":
        b = best(args.setting)
        for method in ("etkf", "enks"):  # the filter, and the smoother on it with the filter's tuned settings
            once(args.setting, "test", b["members"], b["radius"], b["inflation"], 2, args.count, method)
    table()


if __name__ == "__main__":
    main()
