"""Smoothers next to smoothers: SDA against the EnKS, the iEnKS, tuned (L)ETKFs and a particle filter, on the
same truth and observations, every method tuned on the validation split and scored on the test split.

    python -m benchmarks.assimilation_smoothers --system lorenz63 [--sda CKPT ...] [--windows 32]
    python -m benchmarks.assimilation_smoothers --system lorenz96 --setting arctan [--sda pretrained:lorenz96]
    python -m benchmarks.assimilation_smoothers --collect      # rebuild the tables from the JSON records

Protocol (the same for every method):

* windows: the first ``--length`` (128) states of the first ``--windows`` test trajectories (32 for the Lorenz
  systems: the whole test split); tuning on ``--valid-windows`` validation trajectories.  Observations are made
  once per split with the task's operator and noise (``configs/<system>_sda.yaml``: L63 all variables every
  5th state, noise std 1.41; L96 every variable every state, noise std 1) and shared by all methods.
* classical methods use the true dynamics and start from climatology: members drawn from the training states.
* each method's hyper-parameters are chosen by the validation RMSE after spin-up (grids below); the chosen
  setting is run once on the test windows.
* scores per window (:func:`physics.assimilation.metrics.score_windows`): RMSE of the ensemble mean over all
  states, after the first ``--spinup`` (25) states, and at the observed states after spin-up (for the filters
  this is their analysis, DAPPER's ``rmse.a``); spread/error ratio and fair CRPS after spin-up; tables give the
  mean over windows and its standard error.  Seconds are wall-clock per window on this machine.

Hard settings (``--setting``, :data:`SETTINGS`; item 3 of issue 13), each against the same methods:

* ``arctan``: nonlinear observations ``arctan(x)`` of the same variables and times, noise std 0.1 (the classical
  methods get the true ``g = arctan`` and linearise it through their ensembles; SDA differentiates through it);
* ``sparse``: fewer variables and times (L63: x and z every 10th state; L96: every 2nd variable every 4th state);
* ``model_error`` (L96): the classical methods -- and SDA's optional weak-constraint model term -- integrate
  Lorenz-96 with forcing F = 7 while the truth (and the data the prior learned from) have F = 8;
* ``long``: test windows of 256 states (the whole test trajectories), hyper-parameters tuned on 128-state
  validation windows (the validation trajectories' length).

SDA's hyper-parameters in the hard settings are tuned on their own validation windows over the grid given on the
command line (``--sda-gamma``, ``--sda-dynamics``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from pathlib import Path

import torch

import moldiff
from physics.assimilation.enkf import ring_localization, run_filter
from physics.assimilation.metrics import score_windows
from physics.assimilation.particle import run_particle_filter
from physics.assimilation.smoothers import run_enks, run_ienks
from physics.fields.datasets import simulator
from benchmarks.harness import machine

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "assimilation_smoothers"
TABLE = ROOT / "benchmarks" / "results" / "assimilation_smoothers.md"

GRIDS = {
    "lorenz63": {
        "etkf": {"members": [20, 50], "inflation": [1.0, 1.02, 1.05, 1.1, 1.2]},
        "enks": {"members": [20, 50], "inflation": [1.0, 1.02, 1.05, 1.1, 1.2]},
        "ienks": {"members": [20], "lag": [1, 2, 3, 4], "inflation": [1.0, 1.02, 1.05, 1.1]},
        "pf": {"members": [1000], "jitter": [0.0, 0.1, 0.2, 0.4]},
    },
    "lorenz96": {
        "etkf": {"members": [20, 50], "inflation": [1.0, 1.02, 1.05, 1.1, 1.2], "localization": [0.0, 4.0, 8.0]},
        "enks": {"members": [50], "inflation": [1.0, 1.02, 1.05, 1.1, 1.2]},
        "ienks": {"members": [40], "lag": [1, 2, 4], "inflation": [1.0, 1.02, 1.05, 1.1]},
    },
}
#: the hard settings: config overrides of the observations, the classical model's Lorenz parameters, the test length
SETTINGS = {
    "lorenz63": {
        "standard": {},
        "arctan": {"observation": ["observation.transform=arctan", "observation.noise_std=0.1"]},
        "sparse": {"observation": ["observation.kind=subsample", "observation.stride=2", "observation.every=10"]},
        "long": {"length": 256},
    },
    "lorenz96": {
        "standard": {},
        "arctan": {"observation": ["observation.transform=arctan", "observation.noise_std=0.1"]},
        "sparse": {"observation": ["observation.kind=subsample", "observation.stride=2", "observation.every=4"]},
        "model_error": {"model": {"forcing": 7.0}},
        "long": {"length": 256},
    },
}
NAMES = {"etkf": "ETKF / LETKF (filter)", "enks": "EnKS (whole window)", "ienks": "iEnKS (lag L, S = 1)",
         "pf": "particle filter (SIR)", "sda": "SDA (diffusion prior)", "climatology": "climatology"}




class Windows:
    """Truth ``[B, T, D]`` and observations of one split, with what every method needs to run on them."""

    def __init__(self, task, split: str, n: int, length: int, seed: int, model: dict | None = None):
        self.task = task
        self.model = model or {}  # the classical methods' Lorenz parameters (model error), {} for the truth's
        self.truth = task.trajectories(split, progress=False)[:n, :length].double()
        if len(self.truth) < n:
            raise SystemExit(f"the {split} split has {len(self.truth)} trajectories, asked for {n}")
        self.y = task.observe(self.truth, torch.Generator().manual_seed(seed))  # [B, P]
        times = task.operator.times(length)
        ys = task.operator.split(self.y)  # [B, K, p]
        self.obs = {t: ys[:, i] for i, t in enumerate(times)}
        self.observed = torch.zeros(length, dtype=torch.bool)
        self.observed[list(times)] = True
        self.H = task.operator.matrix(torch.float64)
        self.length = length

    def climatology(self, members: int, seed: int) -> torch.Tensor:
        train = self.task.trajectories("train", progress=False).reshape(-1, *self.task.shape).double()
        pick = torch.randint(0, len(train), (len(self.truth), members), generator=torch.Generator().manual_seed(seed))
        return train[pick]


def run_classical(method: str, params: dict, w: Windows, seed: int = 0) -> torch.Tensor:
    """Ensembles ``[B, M, T, D]`` of a classical method with ``params`` on the windows ``w``."""
    sim = simulator(w.task.spec, **w.model)
    ens0 = w.climatology(params["members"], seed)
    noise = w.task.cfg.observation.noise_std
    kw = dict(interval=w.task.spec.interval, num_states=w.length, keep_ensemble=True, obs_fn=w.task.operator.obs_fn)
    if method == "etkf":
        loc = params.get("localization", 0.0)
        rho = ring_localization(w.task.shape[0], loc) if loc > 0 else None
        res = run_filter(sim.advance, ens0, w.obs, w.H, noise, method="etkf", inflation=params["inflation"],
                         localization=rho, **kw)
    elif method == "enks":
        res = run_enks(sim.advance, ens0, w.obs, w.H, noise, inflation=params["inflation"], **kw)
    elif method == "ienks":
        res = run_ienks(sim.advance, ens0, w.obs, w.H, noise, lag=params["lag"], inflation=params["inflation"], **kw)
    elif method == "pf":
        res = run_particle_filter(sim.advance, ens0, w.obs, w.H, noise, jitter=params["jitter"],
                                  generator=torch.Generator().manual_seed(seed + 1), **kw)
    else:
        raise ValueError(method)
    return res.ensemble.transpose(1, 2)  # [B, T, M, D] -> [B, M, T, D]


def run_sda(task, model, params: dict, w: Windows, seed: int = 0) -> torch.Tensor:
    """Posterior samples ``[B, M, T, D]`` of the diffusion prior: ``params`` method (sda | mmps), gamma (sda),
    cg_iterations (mmps, default 1 as in Rozet et al.'s experiments), dynamics_std (weak-constraint model term;
    0: none), members; ``task`` is the prior's task (its normalisation, process and sampler)."""
    task.cfg.eval.gamma = params["gamma"] if params["gamma"] is not None else task.cfg.eval.gamma
    task.cfg.eval.cg_iterations = params.get("cg_iterations", 1)
    task.cfg.eval.dynamics_std = params.get("dynamics_std", 0.0)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ens = task.assimilate(model, w.y.float(), n=params["members"], length=w.length,
                              method=params.get("method", "sda"), generator=g, progress=False)
    return ens.double()  # [B, M, T, D]


def _score(ens, w: Windows, spinup: int) -> dict:
    return {k: list(v) for k, v in score_windows(ens, w.truth, w.observed, spinup).summary().items()}


def tune_and_test(name: str, grid: dict, run, valid: Windows, test: Windows, spinup: int,
                  test_params: dict | None = None) -> dict:
    """Every setting of ``grid`` on the validation windows, the best (RMSE after spin-up) on the test windows
    (with ``test_params`` replacing some of its values, e.g. more members)."""
    trials = []
    settings = []
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values))
        if params.get("method") == "mmps":
            params["gamma"] = None  # MMPS has no gamma: its covariance comes from the denoiser's Jacobian
        if params not in settings:
            settings.append(params)
    for params in settings:
        t0 = time.time()
        try:
            ens = run(name, params, valid)
            score = _score(ens, valid, spinup)
        except (FloatingPointError, torch.linalg.LinAlgError) as e:  # a diverged setting is a bad setting
            score = {"error": str(e)[:200]}
        trials.append({"params": params, "valid": score, "seconds": time.time() - t0})
        print(f"  valid {name} {params}: {score.get('rmse_after_spinup', score)}", flush=True)
    ok = [t for t in trials if "error" not in t["valid"]]
    if not ok:
        print(f"  TEST {name}: every setting diverged on validation", flush=True)
        return {"method": name, "params": {}, "test": {"error": "every setting diverged on validation"},
                "trials": trials}
    best = min(ok, key=lambda t: t["valid"]["rmse_after_spinup"][0])
    chosen = {**best["params"], **(test_params or {})}
    t0 = time.time()
    try:
        ens = run(name, chosen, test)
        score = _score(ens, test, spinup)
    except (FloatingPointError, torch.linalg.LinAlgError) as e:  # diverged on a test window: reported as such
        score = {"error": f"diverged on the test windows: {str(e)[:150]}"}
    seconds = (time.time() - t0) / len(test.truth)
    print(f"  TEST {name} {chosen}: {score.get('rmse_after_spinup', score)}", flush=True)
    return {"method": name, "params": chosen, "test": score, "seconds_per_window": seconds, "trials": trials}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--system", choices=sorted(GRIDS))
    ap.add_argument("--setting", default="standard", help="standard or a hard setting of SETTINGS (see above)")
    ap.add_argument("--methods", nargs="*", default=None, help="classical methods to run (default: all of the grid)")
    ap.add_argument("--sda", nargs="*", default=[], metavar="CKPT",
                    help="trajectory-prior checkpoints to score (pretrained:NAME for a shipped prior)")
    ap.add_argument("--sda-methods", nargs="*", default=["sda"], choices=["sda", "mmps"])
    ap.add_argument("--sda-gamma", nargs="*", type=float, default=[0.03, 0.1, 0.3])
    ap.add_argument("--sda-dynamics", nargs="*", type=float, default=[0.0],
                    help="weak-constraint stds of the one-step model residual to try (0: no model term)")
    ap.add_argument("--sda-members", type=int, default=16, help="posterior samples per test window")
    ap.add_argument("--sda-valid-members", type=int, default=8)
    ap.add_argument("--sda-valid-windows", type=int, default=8)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="overrides of the SDA checkpoint")
    ap.add_argument("--windows", type=int, default=32)
    ap.add_argument("--valid-windows", type=int, default=16)
    ap.add_argument("--length", type=int, default=None, help="test window length (default: the setting's, 128)")
    ap.add_argument("--spinup", type=int, default=25)
    ap.add_argument("--grid", default=None, metavar="JSON",
                    help='replace grids, e.g. \'{"ienks": {"members": [20], "lag": [3], "inflation": [1.0]}}\'')
    ap.add_argument("--tag", default="")
    ap.add_argument("--collect", action="store_true")
    a = ap.parse_args()
    if a.collect:
        return collect()
    if a.setting not in SETTINGS[a.system]:
        raise SystemExit(f"--setting: {a.system} has {sorted(SETTINGS[a.system])}, not {a.setting!r}")
    setting = SETTINGS[a.system][a.setting]
    length = a.length or setting.get("length", 128)
    valid_length = min(length, 128)  # the validation trajectories' length
    model = setting.get("model", {})
    OUT.mkdir(parents=True, exist_ok=True)
    obs_overrides = ["eval.methods=[sda]", *setting.get("observation", [])]  # the task's own evaluation is unused
    cfg = moldiff.load_config(ROOT / "configs" / f"{a.system}_sda.yaml", ["tracking.enabled=false", *obs_overrides])
    task = moldiff.tasks.get_task("trajectory")(cfg)
    valid = Windows(task, "valid", a.valid_windows, valid_length, 11, model)
    test = Windows(task, "test", a.windows, length, 12, model)
    records = []
    clim = task.stats[0].double()
    records.append({"method": "climatology", "test": {"rmse_after_spinup": [
        float((test.truth[:, a.spinup:] - clim).square().mean().sqrt()), None]}})
    grids = {**GRIDS[a.system], **(json.loads(a.grid) if a.grid else {})}
    for name in a.methods if a.methods is not None else ([] if a.sda else grids):
        records.append(tune_and_test(name, grids[name], run_classical, valid, test, a.spinup))
    if a.sda:  # the checkpoint is one more hyper-parameter: only the best setting of the best prior is tested
        overrides = [*a.overrides, *obs_overrides]
        if "forcing" in model:  # the weak-constraint model term gets the same wrong model as the classical methods
            overrides.append(f"eval.dynamics_forcing={model['forcing']}")
        priors = {str(c): _load_prior(str(c), overrides) for c in a.sda}
        for ptask, _ in priors.values():
            same = Windows(ptask, "test", a.windows, length, 12)
            assert torch.equal(same.y, test.y), "every prior's task must observe the same truth as the classical methods"
        pv = Windows(next(iter(priors.values()))[0], "valid", a.sda_valid_windows, valid_length, 11)
        grid = {"prior": list(priors), "members": [a.sda_valid_members], "method": a.sda_methods,
                "gamma": a.sda_gamma, "dynamics_std": a.sda_dynamics}
        rec = tune_and_test("sda", grid, lambda _n, p, w: run_sda(*priors[p["prior"]], p, w), pv, test, a.spinup,
                            test_params={"members": a.sda_members})
        ptask = priors[rec["params"]["prior"]][0]
        rec["prior"] = {"checkpoint": rec["params"].pop("prior"), "window": ptask.cfg.model.window,
                        "backbone": ptask.cfg.model.backbone, "options": ptask.cfg.model.options,
                        "sampler": moldiff.config.to_dict(ptask.cfg.sampler), "overrides": overrides}
        records.append(rec)
    stem = a.system if a.setting == "standard" else f"{a.system}_{a.setting}"
    out = OUT / f"{stem}{('_' + a.tag) if a.tag else ''}.json"
    out.write_text(json.dumps({"system": a.system, "setting": a.setting, "windows": a.windows,
                               "valid_windows": a.valid_windows, "length": length, "valid_length": valid_length,
                               "model": model, "spinup": a.spinup, "machine": machine(),
                               "observation": moldiff.config.to_dict(cfg.observation), "records": records}, indent=1))
    print(f"wrote {out}")


def _load_prior(source: str, overrides: list[str]):
    """A trajectory prior from a checkpoint path or ``pretrained:NAME``: ``(task, model)``."""
    if source.startswith("pretrained:"):
        return moldiff.load_model(pretrained=source.split(":", 1)[1], overrides=overrides, device="cpu")
    return moldiff.load_model(source, overrides=overrides, device="cpu")


def _fmt(v) -> str:
    if not v:
        return ""
    return f"{v[0]:.3f} ± {v[1]:.3f}" if v[1] is not None and v[1] == v[1] else f"{v[0]:.3f}"


HARD_TABLE = ROOT / "benchmarks" / "results" / "assimilation_hard.md"
INTRO = ("Written by `python -m benchmarks.assimilation_smoothers --collect` from "
         "`benchmarks/results/assimilation_smoothers/*.json`; protocol in the script's docstring.  Mean over test "
         "windows ± its standard error.  RMSE: of the ensemble mean, all states / after the spin-up / at the observed "
         "states after the spin-up (a filter's analysis).  Spread/error and CRPS after the spin-up.")


def collect() -> None:
    merged: dict[tuple[str, str], dict] = {}
    for path in sorted(OUT.glob("*.json")):  # one table per system and setting: the classical run and the SDA runs
        rec = json.loads(path.read_text())
        setting = rec.get("setting", "standard")
        prefix = rec["system"] if setting == "standard" else f"{rec['system']}_{setting}"
        tag = path.stem[len(prefix) + 1:]
        tag = tag.removeprefix("sda_").removeprefix("sda").replace("_", " ")
        for r in rec["records"]:
            if tag and r["method"] != "climatology":
                r["label"] = f"SDA, {tag}" if r["method"] == "sda" else f"{NAMES[r['method']]}, {tag}"
        key = (rec["system"], setting)
        if key not in merged:
            merged[key] = rec
        else:
            merged[key]["records"] += [r for r in rec["records"] if r["method"] != "climatology"]
    standard = ["# Smoothers next to smoothers: Lorenz-63 and Lorenz-96, tuned on validation, scored on test", "",
                INTRO, ""]
    hard = ["# Where the classical methods break: hard settings, every method tuned on validation, scored on test",
            "", INTRO, ""]
    hard += _summary({k: v for k, v in merged.items() if k[1] != "standard"})
    for (system, setting), rec in sorted(merged.items()):
        (standard if setting == "standard" else hard).extend(_table(system, setting, rec))
    TABLE.write_text("\n".join(standard))
    HARD_TABLE.write_text("\n".join(hard))
    print(f"wrote {TABLE} and {HARD_TABLE}")


def _summary(merged: dict[tuple[str, str], dict]) -> list[str]:
    """One line per method, one column per (system, setting): the test RMSE after spin-up; the best in bold."""
    keys = sorted(merged)
    methods = ["climatology", "etkf", "enks", "ienks", "pf", "sda"]
    cells: dict[str, dict] = {m: {} for m in methods}
    for key in keys:
        for r in merged[key]["records"]:
            if r["method"] in cells and "label" not in r:
                t = r["test"]
                cells[r["method"]][key] = t.get("rmse_after_spinup") if "error" not in t else "diverged"
    lines = ["## Summary: RMSE after spin-up (test windows, mean ± standard error; best of each column in bold)", "",
             "| method | " + " | ".join(f"{s} {k}" for s, k in keys) + " |", "|---|" + "---|" * len(keys)]
    for m in methods:
        row = []
        for key in keys:
            v = cells[m].get(key)
            vals = [c[key][0] for mm, c in cells.items() if mm != "climatology" and isinstance(c.get(key), list)]
            if v is None:
                row.append("")
            elif isinstance(v, str):
                row.append(v)
            else:
                txt = _fmt(v)
                row.append(f"**{txt}**" if m != "climatology" and vals and v[0] == min(vals) else txt)
        lines.append(f"| {NAMES[m]} | " + " | ".join(row) + " |")
    return [*lines, ""]


def _table(system: str, setting: str, rec: dict) -> list[str]:
    ob = rec["observation"]
    what = f"`{ob['kind']}`" + (f" (stride {ob['stride']})" if ob["kind"] == "subsample" else "")
    if ob.get("transform", "identity") != "identity":
        what += f", {ob['transform']}"
    model = ", ".join(f"{k} {v}" for k, v in rec.get("model", {}).items())
    lines = [f"## {system}, {setting}: {rec['windows']} test windows x {rec['length']} states, spin-up "
             f"{rec['spinup']} states; observations {what}, every {ob['every']}, noise std {ob['noise_std']:.3g}"
             + (f"; the methods' model: {model} (the truth's differs)" if model else ""),
             "", f"Machine: {rec['machine']}.", "",
             "| method | chosen on validation | RMSE all | RMSE after spin-up | RMSE observed | spread/error "
             "| CRPS | s / window |", "|---|---|---|---|---|---|---|---|"]
    for r in rec["records"]:
        t = r["test"]
        params = ", ".join(f"{k} {v}" for k, v in r.get("params", {}).items())
        if "prior" in r:  # the diffusion prior: its window, width and sampler
            p = r["prior"]
            sampler = p["sampler"]
            params = (f"window {2 * p['window'] + 1} states, MLP {p['width']} x {p['depth']}, {sampler['name']} "
                      f"{sampler['steps']} steps x {sampler['corrector_steps']} corrector; {params}")
        if "error" in t:
            lines.append(f"| {r.get('label', NAMES.get(r['method'], r['method']))} | {params} | diverged: "
                         f"{t['error'][:80]} | | | | | |")
            continue
        secs = f"{r['seconds_per_window']:.2f}" if "seconds_per_window" in r else ""
        lines.append(f"| {r.get('label', NAMES.get(r['method'], r['method']))} | {params} | {_fmt(t.get('rmse'))} | "
                     f"{_fmt(t.get('rmse_after_spinup'))} | {_fmt(t.get('rmse_observed'))} | "
                     f"{_fmt(t.get('spread_error_ratio'))} | {_fmt(t.get('crps'))} | {secs} |")
    return [*lines, ""]


if __name__ == "__main__":
    main()
