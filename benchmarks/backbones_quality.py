"""Backbones at equal CPU-minutes: each case trains its config for the same CPU-time budget
(``train.max_cpu_minutes``, one torch thread, so wall time on a shared machine does not matter) from step 0,
then runs the task's own evaluation -- QM9 graph recipe:
validity, atom and molecule stability; particles: energy W2, distance TV, NLL, ESS.

    python -m benchmarks.backbones_quality --cases qm9_molgraph qm9_e3nn_l1 --minutes 20
    python -m benchmarks.backbones_quality --collect        # rebuild the table from the saved runs

Each run is an MLflow run (experiment ``backbones``); its record goes to
``benchmarks/results/backbones_quality/<case>.json`` and ``--collect`` writes ``backbones_quality.md``.  Two
invocations may run side by side (one per core): the table says what shared the machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from benchmarks.harness import machine

import moldiff

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "results" / "backbones_quality"
TABLE = ROOT / "benchmarks" / "results" / "backbones_quality.md"

#: case -> (label, config, overrides); sizes at comparable parameter counts (benchmarks/backbones.py)
CASES = {
    "qm9_molgraph": ("MolGraphNet 6 x 128", "qm9_flow_cpu", ["model.backbone=molgraph"]),
    "qm9_e3nn_l1": ("e3nn lmax 1, 5 x 128", "qm9_flow_cpu",
                    ["model.backbone=e3nn", "model.hidden=128", "model.layers=5", "model.options.lmax=1"]),
    "qm9_e3nn_l2": ("e3nn lmax 2, 5 x 80", "qm9_flow_cpu",
                    ["model.backbone=e3nn", "model.hidden=80", "model.layers=5", "model.options.lmax=2"]),
    "dw4_egnn": ("EGNN 3 x 64", "dw4_otcfm", ["model.backbone=egnn"]),
    "dw4_e3nn_l1": ("e3nn lmax 1, 3 x 56", "dw4_otcfm",
                    ["model.backbone=e3nn", "model.hidden=56", "model.layers=3", "model.options.lmax=1"]),
    "dw4_e3nn_l2": ("e3nn lmax 2, 3 x 32", "dw4_otcfm",
                    ["model.backbone=e3nn", "model.hidden=32", "model.layers=3", "model.options.lmax=2"]),
    "lj13_egnn": ("EGNN 4 x 64", "lj13_eqotcfm", ["model.backbone=egnn"]),
    "lj13_e3nn_l1": ("e3nn lmax 1, 4 x 48", "lj13_eqotcfm",
                     ["model.backbone=e3nn", "model.hidden=48", "model.layers=4", "model.options.lmax=1"]),
    "lj13_e3nn_l2": ("e3nn lmax 2, 4 x 32", "lj13_eqotcfm",
                     ["model.backbone=e3nn", "model.hidden=32", "model.layers=4", "model.options.lmax=2"]),
}

#: metric columns per family: (metric key, header, format)
COLUMNS = {
    "qm9": [("graph/validity", "valid", "{:.1%}"), ("graph/atom_stability", "atom stable", "{:.1%}"),
            ("graph/mol_stability", "mol. stable", "{:.1%}"), ("graph/uniqueness", "unique", "{:.1%}")],
    "particles": [("energy/w2", "energy W2", "{:.3f}"), ("distance/tv", "distance TV", "{:.3f}"),
                  ("nll", "NLL", "{:.3f}"), ("ess", "ESS", "{:.4f}")],
}


def family(config: str) -> str:
    return "qm9" if config.startswith("qm9") else "particles"


def run(case: str, minutes: float, extra: list[str]) -> dict:
    label, config, overrides = CASES[case]
    torch.set_num_threads(1)
    sets = [*overrides, f"train.max_cpu_minutes={minutes}", "train.steps=1000000", f"name={case}",
            "tracking.experiment=backbones", "train.ckpt_every=1000", *extra]
    cfg = moldiff.load_config(config, sets)
    t0 = time.time()
    res = moldiff.train(cfg, overwrite=True, progress=False)
    params = sum(p.numel() for p in res.model.parameters())
    rec = {"case": case, "label": label, "config": config, "overrides": sets, "minutes": minutes, "steps": res.step,
           "params": params, "batch_size": cfg.train.batch_size, "total_seconds": time.time() - t0,
           "metrics": res.metrics, "machine": machine(), "sampler": f"{cfg.sampler.name} {cfg.sampler.steps}",
           "date": time.strftime("%Y-%m-%d"), "run_id": res.run_id}
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / f"{case}.json").write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
    return rec


def collect() -> None:
    recs = {p.stem: json.loads(p.read_text()) for p in sorted(RUNS.glob("*.json"))}
    lines = ["# Backbones at equal CPU-minutes (issue 15)", "",
             "Made by `python -m benchmarks.backbones_quality`: every case trains its config from step 0 for the same "
             "CPU-time budget (`train.max_cpu_minutes`, one torch thread; two cases ran side by side on the 2 cores), "
             "then the task's own evaluation with the EMA weights (QM9: 200 molecules; DW4: 1,000 samples, ESS and NLL "
             "with standard errors; LJ13: 500 samples at 20 Heun steps, no ESS -- the exact divergence would take "
             "hours per model on this CPU).  Sampling seconds are wall time on the shared machine.  Parameter counts "
             "are comparable within a system (`benchmarks/results/backbones.md` has the throughput).", ""]
    for fam, title in (("qm9", "QM9 graph recipe (`qm9_flow_cpu`)"), ("particles", "Particles (OT-CFM / eq-OT-CFM)")):
        rows = [recs[c] for c in CASES if c in recs and family(recs[c]["config"]) == fam]
        if not rows:
            continue
        cols = COLUMNS[fam]
        lines += [f"## {title}", "", "| case | backbone | parameters | minutes | steps | "
                  + " | ".join(h for _, h, _ in cols) + " | NFE | sampling s (wall) | machine |",
                  "|---|---|---|---|---|" + "---|" * len(cols) + "---|---|---|"]
        for r in rows:
            m = r["metrics"]
            vals = ["-" if m.get(k) is None else f.format(m[k]) for k, _, f in cols]
            if fam == "particles" and m.get("ess_se") is not None:
                vals[-1] += f" ± {m['ess_se']:.3f}"
            if fam == "particles" and m.get("nll_se") is not None:
                vals[-2] += f" ± {m['nll_se']:.3f}"
            nfe = m.get("nfe", float(r["sampler"].split()[-1]))
            lines.append(f"| {r['case']} | {r['label']} | {r['params']:,} | {r['minutes']:g} | {r['steps']} | "
                         + " | ".join(vals) + f" | {nfe:.0f} | {m.get('sample_seconds', float('nan')):.0f} | "
                         f"{r['machine']} |")
        lines.append("")
    lines += ["Runs (date, overrides):", ""]
    lines += [f"- {r['case']} ({r['date']}, config `{r['config']}`, sampler {r['sampler']}): `{' '.join(r['overrides'])}`"
              for r in recs.values()]
    TABLE.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="*", default=[], choices=list(CASES))
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--set", dest="extra", action="append", default=[], help="extra overrides for every case")
    ap.add_argument("--collect", action="store_true")
    args = ap.parse_args()
    for case in args.cases:
        rec = run(case, args.minutes, args.extra)
        print(case, rec["steps"], "steps", {k: round(v, 4) for k, v in rec["metrics"].items()}, flush=True)
        collect()
    collect()


if __name__ == "__main__":
    main()
