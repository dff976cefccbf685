"""The ``moldiff`` command line, in-process through :func:`moldiff.cli.main` and as ``python -m moldiff``:
``config show``, ``train`` (dry run, errors, every smoke config), ``sample`` and ``eval``."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from moldiff.cli import main
from moldiff.config import to_dict, to_yaml
from moldiff.loading import load_config
from moldiff.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SMOKE_DIR = ROOT / "configs" / "smoke"
SMOKE = sorted(SMOKE_DIR.glob("*.yaml"))
VP = SMOKE_DIR / "toy2d_vp.yaml"
#: a short run of a smoke config: enough for a checkpoint and an evaluation, not for a good model
SHORT = ["tracking.enabled=false", "train.steps=20", "train.log_every=10", "eval.samplers=[ode_heun, pc]",
         "eval.nll_points=10", "eval.n_samples=100", "eval.steps=10", "sampler.steps=10"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """An empty working folder as the current directory, so stray relative writes are caught."""
    d = tmp_path / "work"
    d.mkdir()
    monkeypatch.chdir(d)
    return d


def _sets(*items: str) -> list[str]:
    out = []
    for item in items:
        out += ["--set", item]
    return out


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _printed_metrics(stdout: str) -> dict[str, float]:
    """The ``  key  value`` table that ``train`` and ``eval`` print."""
    out = {}
    for line in stdout.splitlines():
        m = re.fullmatch(r"\s+(\S+)\s+([-+]?(?:[0-9.]+(?:[eE][-+]?\d+)?|nan|inf))", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def _checkpoint_from(stdout: str) -> Path:
    m = re.search(r"checkpoint: (\S+)", stdout)
    assert m, stdout
    return Path(m.group(1))


# --------------------------------------------------------------------------------------------------
# config show / train --dry-run
# --------------------------------------------------------------------------------------------------
def test_config_show_fills_defaults(work, capsys):
    rc, out, err = _run(capsys, "config", "show", VP)
    assert rc == 0, err
    shown = yaml.safe_load(out)
    assert shown == to_dict(load_config(VP))
    # keys absent from the smoke YAML are there with their defaults
    assert shown["name"] == "toy2d_vp"
    assert shown["train"]["warmup_steps"] == 0
    assert shown["train"]["betas"] == [0.9, 0.999]
    assert shown["sampler"]["denoise"] is True and shown["sampler"]["options"] == {}  # the sampler's own: its defaults
    assert shown["tracking"]["enabled"] is True
    assert shown["model"]["time_dim"] == 64
    # and those present keep the YAML's values
    assert shown["train"]["steps"] == 200 and shown["tracking"]["experiment"] == "smoke"
    assert _files(work) == []


def test_config_show_applies_overrides_and_round_trips(work, capsys):
    rc, out, _ = _run(capsys, "config", "show", VP, *_sets("train.lr=0.0005", "data.target=two_moons", "name=x"))
    assert rc == 0
    shown = yaml.safe_load(out)
    assert shown["train"]["lr"] == 0.0005 and shown["data"]["target"] == "two_moons" and shown["name"] == "x"
    # what `config show` prints is a config that loads back to the same thing
    saved = work.parent / "shown.yaml"
    saved.write_text(out)
    assert load_config(saved) == load_config(VP, ["train.lr=0.0005", "data.target=two_moons", "name=x"])


def test_train_dry_run_prints_config_and_writes_nothing(work, capsys):
    runs = work / "runs"
    rc, out, err = _run(capsys, "train", VP, "--dry-run", *_sets(f"runs_root={runs}", "train.steps=3"))
    assert rc == 0, err
    assert out == to_yaml(load_config(VP, [f"runs_root={runs}", "train.steps=3"]))
    assert yaml.safe_load(out)["train"]["steps"] == 3
    assert _files(work) == []  # no run folder, no MLflow store (tracking is on in this config)


# --------------------------------------------------------------------------------------------------
# errors: exit code 2, a message naming the problem, nothing left behind
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, needle", [
    (["train", VP, "--set", "train.lrr=0.1"], "'train.lrr'"),
    (["train", VP, "--set", "lrr=0.1"], "'lrr'"),
    (["train", VP, "--set", "train.steps=ten"], "train.steps"),
    (["train", VP, "--set", "tracking.enabled=1"], "tracking.enabled"),
    (["train", VP, "--set", "train.batch_size=0"], "train.batch_size"),
    (["train", VP, "--set", "sampler.name=bogus"], "sampler.name"),
    (["train", VP, "--set", "train.lr"], "key.path=value"),
    (["train", "no_such_config.yaml"], "no_such_config.yaml"),
    (["train", "no_such_config.yaml", "--dry-run"], "not found"),
    (["config", "show", VP, "--set", "model.widht=3"], "'model.widht'"),
    (["config", "show", "no_such_config.yaml"], "not found"),
    (["sample", "missing.pt", "-n", "10", "--out", "x.npy"], "missing.pt"),
    (["eval", "missing.pt", "--json", "m.json"], "missing.pt"),
])
def test_errors_exit_2_and_leave_nothing(work, capsys, argv, needle):
    argv = [*argv, "--set", f"runs_root={work / 'runs'}"] if argv[0] in ("train", "config") else argv
    rc, out, err = _run(capsys, *argv)
    assert rc == 2, (out, err)
    assert err.startswith("moldiff: error:"), err
    assert needle in err, err
    assert "Traceback" not in err
    assert _files(work) == []


def test_resume_from_missing_checkpoint(work, capsys):
    missing = work.parent / "nowhere" / "last.pt"
    rc, out, err = _run(capsys, "train", VP, "--resume", missing, "--no-progress",
                        *_sets(f"runs_root={work / 'runs'}"))  # tracking stays on: no store may appear
    assert rc == 2, (out, err)
    assert "--resume" in err and str(missing) in err
    assert _files(work) == []
    assert not missing.parent.exists()


def test_corrupt_checkpoint(work, capsys):
    bad = work.parent / "corrupt.pt"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    rc, out, err = _run(capsys, "sample", bad, "-n", "10", "--out", work / "out" / "x.npy", "--no-progress")
    assert rc == 2, (out, err)
    assert err.startswith("moldiff: error:") and str(bad) in err and "not a readable moldiff checkpoint" in err
    rc, out, err = _run(capsys, "eval", bad, "--json", work / "m.json", "--no-progress")
    assert rc == 2 and str(bad) in err
    assert _files(work) == []


def test_torch_file_that_is_not_a_checkpoint(work, capsys):
    import torch

    other = work.parent / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, other)
    rc, _, err = _run(capsys, "sample", other, "-n", "10", "--out", work / "x.npy")
    assert rc == 2 and "not a moldiff checkpoint" in err
    assert _files(work) == []


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sample", "x.pt", "--out", "x.npy"])  # -n is required
    assert exc.value.code == 2
    assert "-n" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["fly"])
    assert exc.value.code == 2


# --------------------------------------------------------------------------------------------------
# train -> sample -> eval
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """A short CLI training run of the VP smoke config (tracking off)."""
    root = tmp_path_factory.mktemp("cli_run")
    rc = main(["train", str(VP), "--no-progress", *_sets(f"runs_root={root}", *SHORT)])
    assert rc == 0
    return root


def test_train_prints_and_writes_checkpoint(tmp_path, capsys):
    root = tmp_path / "runs"
    rc, out, err = _run(capsys, "train", VP, "--no-progress", *_sets(f"runs_root={root}", *SHORT, "train.steps=5"))
    assert rc == 0, err
    ckpt = _checkpoint_from(out)
    assert ckpt == root / "smoke" / "toy2d_vp" / "checkpoints" / "last.pt"
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["last.pt", "step_00000005.pt"]  # no temp files
    assert out.startswith("trained 5 steps")
    state = load_checkpoint(ckpt)
    assert state["step"] == 5 and state["task"] == "toy2d" and state["config"]["train"]["steps"] == 5
    metrics = _printed_metrics(out)
    assert {"w2/ode_heun", "w2/pc", "w2/noise_floor", "nll/heldout"} <= set(metrics)
    assert "MLflow run" not in out  # tracking off
    assert not (root / "mlflow.db").exists()


def test_sample_npy_csv_png(short_run, work, capsys):
    ckpt = short_run / "smoke" / "toy2d_vp" / "checkpoints" / "last.pt"
    assert ckpt.is_file()
    rc, out, err = _run(capsys, "sample", ckpt, "-n", "100", "--out", work / "x.npy", "--no-progress")
    assert rc == 0, err
    assert "wrote 100 samples" in out
    x = np.load(work / "x.npy")
    assert x.shape == (100, 2) and x.dtype == np.float32
    assert np.isfinite(x).all()
    assert x.std(axis=0).min() > 0  # not collapsed to a point

    # same seed, same samples; another seed, other samples
    _run(capsys, "sample", ckpt, "-n", "100", "--out", work / "again.npy", "--no-progress")
    assert np.array_equal(np.load(work / "again.npy"), x)
    _run(capsys, "sample", ckpt, "-n", "100", "--out", work / "seed1.npy", "--seed", "1", "--no-progress")
    assert not np.allclose(np.load(work / "seed1.npy"), x)

    rc, _, err = _run(capsys, "sample", ckpt, "-n", "100", "--out", work / "plots" / "x.png", "--no-progress")
    assert rc == 0, err
    assert (work / "plots" / "x.png").read_bytes()[:8] == PNG

    rc, _, err = _run(capsys, "sample", ckpt, "-n", "30", "--out", work / "x.csv", "--sampler", "ancestral",
                      "--steps", "5", "--no-ema", "--no-progress")
    assert rc == 0, err
    arr = np.loadtxt(work / "x.csv", delimiter=",", skiprows=1)
    assert arr.shape == (30, 2) and np.isfinite(arr).all()
    assert (work / "x.csv").read_text().splitlines()[0] == "x,y"


def test_sample_bad_arguments(short_run, work, capsys):
    ckpt = short_run / "smoke" / "toy2d_vp" / "checkpoints" / "last.pt"
    rc, _, err = _run(capsys, "sample", ckpt, "-n", "10", "--out", work / "x.npy", "--sampler", "bogus")
    assert rc == 2 and "bogus" in err
    rc, _, err = _run(capsys, "sample", ckpt, "-n", "0", "--out", work / "x.npy")
    assert rc == 2 and "n must be >= 1" in err
    rc, _, err = _run(capsys, "sample", ckpt, "-n", "10", "--out", work / "x.npy", "--set", "model.widht=3")
    assert rc == 2 and "'model.widht'" in err
    assert _files(work) == []


def test_eval_json_and_figures(short_run, work, capsys):
    ckpt = short_run / "smoke" / "toy2d_vp" / "checkpoints" / "last.pt"
    rc, out, err = _run(capsys, "eval", ckpt, "--json", work / "out" / "m.json", "--figures", work / "figs",
                        "--no-progress")
    assert rc == 0, err
    metrics = json.loads((work / "out" / "m.json").read_text())
    assert {"w2/ode_heun", "w2/noise_floor", "w2/pc", "nll/heldout", "nfe/ode_heun"} <= set(metrics)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values()), metrics
    assert metrics["w2/noise_floor"] > 0
    assert metrics["nfe/ode_heun"] == 2 * 10 + 1  # heun on 10 steps, plus the final denoising call
    # the printed table is the JSON, to the printed precision
    printed = _printed_metrics(out)
    assert set(printed) == set(metrics)
    assert all(printed[k] == pytest.approx(metrics[k], abs=1e-4) for k in ("w2/ode_heun", "w2/noise_floor"))
    assert (work / "figs" / "samples.png").read_bytes()[:8] == PNG
    # deterministic: evaluating twice gives the same W2
    rc, out2, _ = _run(capsys, "eval", ckpt, "--no-progress")
    assert _printed_metrics(out2)["w2/ode_heun"] == printed["w2/ode_heun"]


def test_eval_reproduces_the_training_evaluation(tmp_path, capsys):
    """``eval`` on the final checkpoint (EMA weights, default seed) gives the metrics training reported."""
    root = tmp_path / "runs"
    rc, out, err = _run(capsys, "train", VP, "--no-progress",
                        *_sets(f"runs_root={root}", *SHORT, "eval.samplers=[ode_heun]", "eval.nll_points=0"))
    assert rc == 0, err
    trained = _printed_metrics(out)
    rc, out, err = _run(capsys, "eval", _checkpoint_from(out), "--json", tmp_path / "m.json", "--no-progress")
    assert rc == 0, err
    evaluated = json.loads((tmp_path / "m.json").read_text())
    for key in ("w2/ode_heun", "w2/noise_floor"):
        assert evaluated[key] == pytest.approx(trained[key], abs=1.5e-4), key


def test_full_cycle_as_subprocesses(tmp_path):
    """The real entry point, ``python -m moldiff``: train, sample, and an error (``eval`` runs in-process
    above; every process start pays for importing torch, POT and dynamo)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}

    def moldiff(*args):
        return subprocess.run([sys.executable, "-m", "moldiff", *map(str, args)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    root = tmp_path / "runs"
    res = moldiff("train", VP, "--no-progress", *_sets(f"runs_root={root}", *SHORT, "train.steps=5",
                                                          "eval.samplers=[ode_heun]", "eval.nll_points=0"))
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = _checkpoint_from(res.stdout)
    assert ckpt.is_file()
    assert math.isfinite(_printed_metrics(res.stdout)["w2/ode_heun"])
    res = moldiff("sample", ckpt, "-n", "100", "--out", tmp_path / "x.npy", "--no-progress")
    assert res.returncode == 0, res.stderr[-3000:]
    x = np.load(tmp_path / "x.npy")
    assert x.shape == (100, 2) and np.isfinite(x).all()

    res = moldiff("train", VP, "--set", "train.lrr=1", "--set", f"runs_root={tmp_path / 'bad'}")
    assert res.returncode == 2
    assert "train.lrr" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "bad").exists()


def test_logs_suit_a_file(tmp_path):
    """Progress to a log file (stderr not a terminal): no progress bars (no carriage returns), one line per
    ``log_every`` training steps, no MLflow or alembic INFO lines (unless --verbose)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    env.pop("MLFLOW_LOGGING_LEVEL", None)
    cmd = [sys.executable, "-m", "moldiff", "train", str(VP), *_sets(f"runs_root={tmp_path / 'r'}", "train.steps=20",
                                                                      "train.log_every=10", "eval.samplers=[ode_rk45]",
                                                                      "eval.nll_points=0")]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "\r" not in res.stderr and "it/s" not in res.stderr
    assert "step 10/20" in res.stderr and "step 20/20" in res.stderr
    assert " INFO " not in res.stderr  # a new MLflow store was created: its INFO lines are silenced
    res = subprocess.run([*cmd[:4], str(VP), "--verbose", *_sets(f"runs_root={tmp_path / 'v'}", "train.steps=2",
                                                                 "eval.samplers=[]", "eval.nll_points=0")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and " INFO " in res.stderr


def test_bad_device_is_a_clean_error(work, capsys):
    rc, _, err = _run(capsys, "train", VP, "--no-progress",
                      *_sets(f"runs_root={work / 'runs'}", "tracking.enabled=false", "train.device=gpu"))
    assert rc == 2 and "device" in err


# --------------------------------------------------------------------------------------------------
# every smoke config, as shipped
# --------------------------------------------------------------------------------------------------
def test_there_are_smoke_configs():
    assert {p.stem for p in SMOKE} >= {"toy2d_vp", "toy2d_ve", "toy2d_subvp", "toy2d_ddpm", "qm9_edm"}


@pytest.mark.parametrize("path", SMOKE, ids=[p.stem for p in SMOKE])
def test_every_smoke_config_trains(path, tmp_path, capsys):
    root = tmp_path / "runs"
    extra = []
    if path.stem == "kolmogorov_latent":  # a latent prior needs its autoencoder: the smoke one, trained first
        rc, out, err = _run(capsys, "train", path.parent / "kolmogorov_ae.yaml", "--no-progress",
                            *_sets(f"runs_root={root}", "tracking.enabled=false", "train.device=cpu"))
        assert rc == 0, err
        extra = [f"latent.autoencoder={_checkpoint_from(out)}"]
    rc, out, err = _run(capsys, "train", path, "--no-progress",
                        *_sets(f"runs_root={root}", "tracking.enabled=false", "train.device=cpu", *extra))
    assert rc == 0, err
    cfg = load_config(path)
    ckpt = _checkpoint_from(out)
    assert ckpt.is_file()
    assert ckpt.parent == root / cfg.tracking.experiment / path.stem / "checkpoints"
    state = load_checkpoint(ckpt)
    assert state["step"] == cfg.train.steps
    assert out.startswith(f"trained {cfg.train.steps} steps")
    metrics = _printed_metrics(out)
    if cfg.task == "qm9":  # molecule metrics (fractions) from the EDM evaluator
        for key in ("atom_stability", "mol_stability", "validity", "uniqueness", "valid_and_unique", "novelty"):
            assert 0.0 <= metrics[key] <= 1.0, (key, metrics)
        assert metrics["n"] == cfg.eval.n_samples
        return
    if cfg.task == "qm9_flow":  # both protocols: the generated graph and EDM's distance rule
        for key in ("graph/atom_stability", "graph/mol_stability", "graph/validity", "edm/mol_stability",
                    "edm/validity", "dist/atom_tv", "geom/clash_rate"):
            assert 0.0 <= metrics[key] <= 1.0, (key, metrics)
        assert metrics["edm/n"] == cfg.eval.n_samples
        return
    if cfg.task == "particles":  # Boltzmann-sampling metrics against the MCMC test split
        for key in ("energy/w1", "energy/w2", "nll", "nfe"):
            assert math.isfinite(metrics[key]), (key, metrics)
        assert 0.0 <= metrics["distance/tv"] <= 1.0 and 0.0 <= metrics["ess"] <= 1.0, metrics
        assert metrics["n_samples"] == cfg.eval.n_samples
        return
    if cfg.task == "field_autoencoder":  # reconstruction error, spectrum error per band, compression
        assert metrics["recon/rmse"] > 0 and metrics["recon/compression"] == 32 * 32 / (2 * 8 * 8), metrics
        assert all(math.isfinite(v) for k, v in metrics.items() if k.startswith("spectrum/")), metrics
        return
    if cfg.task == "latent_trajectory":  # decoded assimilation scores and the prior's statistics
        for m in cfg.eval.methods:
            assert metrics[f"{m}/rmse"] > 0 and metrics[f"{m}/spread"] >= 0, (m, metrics)
        assert metrics["prior/std/model"] > 0 and math.isfinite(metrics["prior/kurtosis/model"]), metrics
        return
    if cfg.task == "trajectory":  # assimilation scores of every method, and the climatological scale
        for m in cfg.eval.methods:
            assert metrics[f"{m}/rmse"] > 0 and metrics[f"{m}/spread"] >= 0, (m, metrics)
        assert metrics["climatology/rmse"] > 0
        if {"enkf", "etkf"} & set(cfg.eval.methods):  # the filters beat climatology even at smoke size
            assert min(metrics.get("enkf/rmse", 1e9), metrics.get("etkf/rmse", 1e9)) < metrics["climatology/rmse"]
        return
    w2 = {k: v for k, v in metrics.items() if k.startswith("w2/")}
    assert set(w2) == {"w2/noise_floor", *(f"w2/{s}" for s in cfg.eval.samplers)}
    assert all(math.isfinite(v) and v > 0 for v in w2.values()), w2
    if cfg.eval.nll_points:
        assert math.isfinite(metrics["nll/heldout"])


# --------------------------------------------------------------------------------------------------
# clear errors instead of tracebacks; nothing non-finite written with exit 0
# --------------------------------------------------------------------------------------------------
def test_paths_and_shapes_that_cannot_work_are_named(short_run, work, capsys):
    ckpt = short_run / "smoke" / "toy2d_vp" / "checkpoints" / "last.pt"
    rc, _, err = _run(capsys, "sample", ckpt, "-n", "10", "--out", work, "--no-progress")
    assert rc == 2 and "is a folder" in err
    rc, _, err = _run(capsys, "sample", ckpt, "-n", "10", "--out", work / "x.npy", "--set", "model.width=16",
                      "--no-progress")
    assert rc == 2 and "do not fit the model" in err and "model.width=16" in err and "Traceback" not in err
    (work / "d").mkdir()
    rc, _, err = _run(capsys, "eval", ckpt, "--json", work / "d", "--no-progress")
    assert rc == 2 and "--json" in err and "is a folder" in err
    (work / "x.mol2").write_text("@<TRIPOS>MOLECULE\n")
    rc, _, err = _run(capsys, "eval", work / "x.mol2")
    assert rc == 2 and "unsupported file type '.mol2'" in err and "eval-molecules" in err
    rc, _, err = _run(capsys, "eval-molecules", work / "x.mol2")
    assert rc == 2 and "unsupported file type '.mol2'" in err
    rc, _, err = _run(capsys, "eval", ckpt.parent)
    assert rc == 2
    assert sorted(p.name for p in work.iterdir()) == ["d", "x.mol2"]


def test_upper_case_suffixes_are_accepted(short_run, work, capsys):
    ckpt = short_run / "smoke" / "toy2d_vp" / "checkpoints" / "last.pt"
    rc, _, err = _run(capsys, "sample", ckpt, "-n", "10", "--out", work / "X.NPY", "--no-progress")
    assert rc == 0, err
    assert np.load(work / "X.NPY").shape == (10, 2)


def _poisoned(ckpt: Path, tmp: Path, value: float) -> Path:
    """A copy of ``ckpt`` whose EMA weights are scaled by ``value`` (1e30: finite but useless; nan)."""
    import torch

    state = load_checkpoint(ckpt)
    state["ema"] = {k: v * value if v.is_floating_point() else v for k, v in state["ema"].items()}
    out = tmp / f"poisoned_{value}.pt"
    torch.save(state, out)
    return out


def test_a_diverged_checkpoint_never_gives_nonfinite_output_with_exit_0(short_run, work, capsys):
    ckpt = short_run / "smoke" / "toy2d_vp" / "checkpoints" / "last.pt"
    nan = _poisoned(ckpt, work.parent, float("nan"))
    for argv in (["sample", nan, "-n", "10", "--out", work / "s.npy"], ["eval", nan]):
        rc, _, err = _run(capsys, *argv, "--no-progress")
        assert rc == 2 and "non-finite EMA weights" in err, err
    huge = _poisoned(ckpt, work.parent, 1e30)
    rc, _, err = _run(capsys, "sample", huge, "-n", "10", "--out", work / "s.npy", "--no-progress")
    assert rc == 3 and "samples is not finite" in err and "nothing was written" in err, err
    rc, _, err = _run(capsys, "eval", huge, "--json", work / "m.json", "--no-progress",
                      "--set", "eval.samplers=[ode_rk45, pc]")
    assert rc == 3 and "not finite" in err and "Traceback" not in err, err
    assert _files(work) == []


def test_upper_case_molecule_files_are_read_like_lower_case(work, capsys):
    from moldiff.molecules.io import write_sdf

    z = np.array([6, 1, 1, 1, 1])
    pos = np.array([[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]])
    write_sdf(work / "lower.sdf", [(z, pos)])
    (work / "UPPER.SDF").write_bytes((work / "lower.sdf").read_bytes())
    results = []
    for name in ("lower.sdf", "UPPER.SDF"):
        rc, out, err = _run(capsys, "eval-molecules", work / name, "--no-novelty", "--no-progress", "--json",
                            work / f"{name}.json")
        assert rc == 0, err
        results.append(json.loads((work / f"{name}.json").read_text()))
    assert results[0] == results[1] and results[0]["validity"] == 1.0


def test_shipped_configs_by_name_from_any_folder(tmp_path, capsys, monkeypatch):
    """``moldiff config list`` names the configs inside the package; ``moldiff train NAME`` finds them from a folder
    with no ``configs/``; an unknown name is a clear error."""
    monkeypatch.chdir(tmp_path)
    assert main(["config", "list"]) == 0
    listed = capsys.readouterr().out
    assert re.search(r"^toy2d_vp\s+task toy2d$", listed, re.M) and "smoke/qm9_flow" in listed
    assert main(["train", "smoke/toy2d_vp", "--dry-run"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["task"] == "toy2d" and out["name"] == "toy2d_vp"
    assert main(["train", "no_such_config", "--dry-run"]) == 2
    assert "moldiff config list" in capsys.readouterr().err


def test_the_wheel_carries_the_configs(tmp_path):
    """A non-editable install has every plugin's configs and shipped models: package data of the wheel, registered
    through its entry points."""
    import zipfile

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(root), "-w",
                    str(tmp_path)], check=True, capture_output=True, timeout=300)
    wheel = zipfile.ZipFile(next(tmp_path.glob("*.whl")))
    names = set(wheel.namelist())
    for folder in ("moldiff/molecules/configs", "moldiff/molecules/configs/smoke", "physics/configs",
                   "physics/configs/smoke"):
        shipped = {f"{folder}/{p.name}" for p in (root / folder).glob("*.yaml")}
        assert shipped and shipped <= names, folder
    assert {"moldiff/molecules/weights/qm9_flow.pt", "physics/weights/lorenz63_prior.pt"} <= names
    eps = next(wheel.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "[moldiff.configs]" in eps and "[moldiff.pretrained]" in eps
