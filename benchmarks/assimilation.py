"""Train trajectory priors and compare SDA, DPS, EnKF and ETKF (Lorenz) in two observation settings each.

    python -m benchmarks.assimilation --system lorenz63 --steps 6000     # train, then both settings
    python -m benchmarks.assimilation --system lorenz63 --eval-only      # re-evaluate the checkpoint
    python -m benchmarks.assimilation --system kolmogorov --steps 2000 --set model.options.channels=[16,32,64] ...
    python -m benchmarks.assimilation --collect                          # rebuild the table

One prior per system (trained from the first setting's config, an MLflow run in experiment
``assimilation-benchmark``); each setting -- Lorenz: ``<system>_sda.yaml`` (standard) and
``<system>_sparse.yaml``; Kolmogorov: ``kolmogorov_coarse.yaml`` and ``kolmogorov_sparse.yaml`` -- is an
evaluation of that checkpoint with the setting's ``observation``, ``eval`` and ``sampler`` sections.  Records go to
``benchmarks/results/assimilation/<system>_<setting>.json``; ``--collect`` writes
``benchmarks/results/assimilation.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import torch
import yaml

import moldiff
from benchmarks.harness import machine

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "results" / "assimilation"
TABLE = ROOT / "benchmarks" / "results" / "assimilation.md"
SETTINGS = {"lorenz63": {"standard": "sda", "sparse": "sparse"}, "lorenz96": {"standard": "sda", "sparse": "sparse"},
            "kolmogorov": {"coarse": "coarse", "sparse": "sparse"}}
METHODS = ("sda", "dps", "enkf", "etkf")




def _ckpt(system: str) -> Path:
    return ROOT / "runs" / "assimilation-benchmark" / f"{system}_prior" / "checkpoints" / "last.pt"


def train(system: str, steps: int, overrides: list[str]) -> None:
    sets = [f"train.steps={steps}", f"name={system}_prior", "tracking.experiment=assimilation-benchmark",
            "eval.n_trajectories=0", f"runs_root={ROOT / 'runs'}", *overrides]
    first = next(iter(SETTINGS[system].values()))
    cfg = moldiff.load_config(ROOT / "configs" / f"{system}_{first}.yaml", sets)
    res = moldiff.train(cfg, overwrite=True, progress=False)  # a measurement starts from step 0
    (RUNS / f"{system}_train.json").write_text(json.dumps(
        {"steps": res.step, "seconds": res.seconds, "run_id": res.run_id, "overrides": sets, "machine": machine()},
        indent=1))


def evaluate(system: str, setting: str, overrides: list[str]) -> dict:
    raw = yaml.safe_load((ROOT / "configs" / f"{system}_{SETTINGS[system][setting]}.yaml").read_text())
    sets = [f"observation.{k}={v}" for k, v in raw["observation"].items()]
    sets += [f"eval.{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in raw["eval"].items()]
    sets += [f"sampler.{k}={v}" for k, v in raw.get("sampler", {}).items()]
    sets += overrides
    t0 = time.time()
    res = moldiff.evaluate(_ckpt(system), overrides=sets, progress=False)
    figdir = RUNS / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    subset = "_" + "_".join(res_methods(sets)) if any(o.startswith("eval.methods=") for o in overrides) else ""
    for name, fig in res.figures.items():  # a re-run of some methods does not overwrite the full figures
        fig.savefig(figdir / f"{system}_{setting}_{name}{subset}.png", dpi=90)
    for name, src in res.files.items():  # the animation
        shutil.copyfile(src, figdir / f"{system}_{setting}_{name}{subset}{Path(src).suffix}")
    rec = {"system": system, "setting": setting, "metrics": res.metrics, "overrides": sets, "machine": machine(),
           "seconds": time.time() - t0, "date": time.strftime("%Y-%m-%d"),
           "checkpoint_steps": torch.load(_ckpt(system), weights_only=True, map_location="cpu")["step"]}
    path = RUNS / f"{system}_{setting}.json"
    if path.exists():  # a re-run of some methods (--eval-set eval.methods=[...]) keeps the others' figures
        old = json.loads(path.read_text())
        rec["metrics"] = {**old["metrics"], **rec["metrics"]}
        rec["earlier_overrides"] = old.get("earlier_overrides", []) + [old["overrides"]]
    path.write_text(json.dumps(rec, indent=1, sort_keys=True))
    return rec


def res_methods(sets: list[str]) -> list[str]:
    """The methods of the last ``eval.methods=[...]`` override."""
    last = [o for o in sets if o.startswith("eval.methods=")][-1]
    return yaml.safe_load(last.split("=", 1)[1])


def _short(override: str) -> str:
    """``observation.noise_std=1.4142135623730951`` -> ``noise_std=1.41``; ``observation.kind=full`` -> ``full``."""
    key, value = override.removeprefix("observation.").split("=", 1)
    try:
        value = f"{float(value):.3g}"
    except ValueError:
        pass
    return value if key == "kind" else f"{key}={value}"


def collect() -> None:
    lines = ["# Data assimilation: SDA, DPS, EnKF, ETKF on Lorenz-63, Lorenz-96 and Kolmogorov flow", "",
             "Written by `python -m benchmarks.assimilation --collect` from "
             "`benchmarks/results/assimilation/*.json`.  RMSE of the ensemble (posterior) mean against the "
             "truth over all states and variables of the assimilated test trajectories; \"2nd half\" leaves out "
             "the first half, where the filters spin up from climatology.  Spread: ensemble std; CRPS: fair "
             "ensemble CRPS.  SDA and DPS are smoothers (they condition on the whole window); EnKF and ETKF are "
             "filters with the true dynamics (perfect model).", "",
             "| system | setting | observations | method | RMSE | RMSE 2nd half | spread | CRPS | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    recs = [json.loads(p.read_text()) for p in sorted(RUNS.glob("*_*.json")) if not p.stem.endswith("_train")]
    machines = set()
    for r in recs:
        m = r["metrics"]
        obs = ", ".join(_short(o) for o in r["overrides"] if o.startswith("observation.") and "seed" not in o)
        for meth in METHODS:
            if f"{meth}/rmse" not in m:
                continue
            lines.append(f"| {r['system']} | {r['setting']} | {obs} | {meth.upper()} | {m[f'{meth}/rmse']:.3f} | "
                         f"{m[f'{meth}/rmse_second_half']:.3f} | {m[f'{meth}/spread']:.3f} | {m[f'{meth}/crps']:.3f} | "
                         f"{m[f'{meth}/seconds']:.0f} |")
        lines.append(f"| {r['system']} | {r['setting']} | | climatology | {m['climatology/rmse']:.3f} | | | | |")
        machines.add(r["machine"])
    lines += ["", "Priors:", ""]
    for p in sorted(RUNS.glob("*_train.json")):
        t = json.loads(p.read_text())
        lines.append(f"- `{p.stem.removesuffix('_train')}`: {t['steps']} steps in {t['seconds']:.0f} s "
                     f"({t['machine']}); overrides `{' '.join(t['overrides'])}`")
    lines += ["", f"Machines: {'; '.join(sorted(machines))}.", ""]
    TABLE.write_text("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--system", choices=list(SETTINGS))
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--settings", nargs="+", default=None, help="default: both of the system's settings")
    p.add_argument("--eval-only", action="store_true")
    p.add_argument("--collect", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", dest="overrides", action="append", default=[], help="training overrides")
    p.add_argument("--eval-set", dest="eval_overrides", action="append", default=[], help="evaluation overrides")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    RUNS.mkdir(parents=True, exist_ok=True)
    if args.system:
        if not args.eval_only:
            train(args.system, args.steps, args.overrides)
        for setting in args.settings or list(SETTINGS[args.system]):
            evaluate(args.system, setting, args.eval_overrides)
    collect()


if __name__ == "__main__":
    main()
