"""The QM9 task end to end on CPU: smoke train -> sample (SDF, extxyz) -> eval, checked in MLflow."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import moldiff
from moldiff.cli import main
from moldiff.diffusion import PointCloudSpace
from moldiff.molecules.features import MoleculeEncoding, UnsupportedElementError
from moldiff.molecules.io import read_molecules
from moldiff.molecules.task import QM9Config, QM9Task

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke" / "qm9_edm.yaml"
METRICS = ("atom_stability", "mol_stability", "validity", "uniqueness", "valid_and_unique", "novelty")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("qm9runs")
    cfg = moldiff.load_config(SMOKE, [f"runs_root={root}", "train.steps=30", "train.ckpt_every=30",
                                      "eval.n_samples=6", "eval.batch_size=4", "sampler.steps=10",
                                      "eval.trajectory_frames=5", "train.device=cpu"])
    return cfg, moldiff.train(cfg, progress=False)


def test_encoding_round_trip_and_errors():
    enc = MoleculeEncoding()
    z = np.array([6, 1, 1, 1, 1, 8, 1, 1])
    pos = np.random.default_rng(0).normal(size=(8, 3))
    graph = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    x = enc.encode(z, pos, graph, 2)
    assert x.shape == (8, 3 + 6)
    np.testing.assert_allclose(x[:, 3:8].sum(1).numpy(), 0.25)  # one-hot / 4
    np.testing.assert_allclose(x[:, 8].numpy(), z / 10)  # atomic number / 10
    space = PointCloudSpace(torch.from_numpy(graph), 2)
    assert space.com(x).abs().max() < 1e-6
    mols = enc.decode_batch(x, torch.from_numpy(graph), 2)
    assert [m[0].tolist() for m in mols] == [[6, 1, 1, 1, 1], [8, 1, 1]]
    with pytest.raises(UnsupportedElementError, match=r"\[17\]"):
        enc.encode(np.array([6, 17]), np.zeros((2, 3)), np.array([0, 0]), 1)
    with pytest.raises(ValueError, match="non-finite"):
        enc.encode(np.array([6, 1]), np.array([[0, 0, np.nan], [1, 0, 0]]), np.array([0, 0]), 1)


def test_loss_is_per_molecule_and_the_denoiser_is_zero_com():
    cfg = QM9Config()
    cfg.model.hidden, cfg.model.layers, cfg.data.max_train, cfg.train.batch_size = 16, 2, 64, 8
    task = QM9Task(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = task.build_model()
    batch = next(task.train_batches(start_step=0, rank=0, world_size=1, device="cpu"))
    loss = task.loss(model, batch, torch.Generator().manual_seed(0))
    assert loss.shape == (8,) and torch.isfinite(loss).all()
    den = task.denoiser(model, batch.graph, batch.num_graphs, batch.max_nodes)
    eps = den.eps(batch.x, torch.full((8,), 0.5))
    assert den.space.com(eps).abs().max() < 1e-5
    # sizes come from the training histogram
    mols = task.sample(model, 5, generator=torch.Generator().manual_seed(1),
                       sampler=moldiff.SamplerConfig(name="ancestral", steps=3), progress=False)
    support, _ = task.size_distribution()
    assert len(mols) == 5 and all(len(z) in support for z, _ in mols)


def test_smoke_train_logs_molecule_metrics_to_mlflow(trained):
    from mlflow.tracking import MlflowClient

    cfg, res = trained
    for k in METRICS:
        assert 0.0 <= res.metrics[k] <= 1.0
    assert res.metrics["n"] == 6
    client = MlflowClient(tracking_uri=f"sqlite:///{Path(cfg.runs_root) / 'mlflow.db'}")
    run = client.get_run(res.run_id)
    assert run.info.status == "FINISHED"
    for k in METRICS[:3]:
        assert k in run.data.metrics
    assert "train/loss" in run.data.metrics and math.isfinite(run.data.metrics["train/loss"])

    def walk(path=None):
        out = set()
        for info in client.list_artifacts(res.run_id, path):
            out |= walk(info.path) if info.is_dir else {info.path}
        return out

    arts = walk()
    assert any(a.endswith("molecules.png") for a in arts), arts
    assert any(a.endswith("trajectory.extxyz") for a in arts), arts
    assert any(a.endswith("samples.sdf") for a in arts), arts


def test_sample_sdf_and_xyz_then_eval_cli(trained, tmp_path, capsys):
    _, res = trained
    for suffix in (".sdf", ".xyz"):
        out = tmp_path / f"mols{suffix}"
        rc = main(["sample", str(res.checkpoint), "-n", "5", "--out", str(out), "--steps", "5", "--no-progress"])
        assert rc == 0 and out.is_file()
        mols = read_molecules(out)
        assert len(mols) == 5 and all(set(z.tolist()) <= {1, 6, 7, 8, 9} for z, _ in mols)
    capsys.readouterr()
    rc = main(["eval-molecules", str(tmp_path / "mols.sdf"), "--no-novelty", "--json", str(tmp_path / "m.json"), "--no-progress"])
    assert rc == 0
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["n"] == 5 and set(METRICS) <= set(data) and "failures" in data
    assert "validity" in capsys.readouterr().out.lower()


def test_sampling_is_seeded(trained):
    _, res = trained
    a = moldiff.sample(res.checkpoint, 3, steps=4, seed=7, progress=False)
    b = moldiff.sample(res.checkpoint, 3, steps=4, seed=7, progress=False)
    for (za, pa), (zb, pb) in zip(a, b):
        assert np.array_equal(za, zb) and np.array_equal(pa, pb)


def test_eval_bad_inputs_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.sdf"
    bad.write_text("not an sdf\n")
    assert main(["eval-molecules", str(bad), "--no-novelty", "--no-progress"]) == 2
    assert main(["eval-molecules", str(tmp_path / "missing.xyz"), "--no-novelty", "--no-progress"]) == 2
    assert main(["eval", "--no-progress"]) == 2
    assert "moldiff: error" in capsys.readouterr().err


def test_resume_is_exact(tmp_path):
    """4 steps + resume + 4 steps == 8 steps: the bucketed batches and the noise are pure functions of the step."""
    sets = ["model.hidden=8", "model.layers=1", "data.max_train=256", "train.batch_size=8", "eval.n_samples=0",
            "tracking.enabled=false", "train.device=cpu", "train.ckpt_every=4"]
    a = moldiff.load_config(SMOKE, sets + [f"runs_root={tmp_path / 'a'}", "train.steps=8"])
    full = moldiff.train(a, progress=False)
    b = moldiff.load_config(SMOKE, sets + [f"runs_root={tmp_path / 'b'}", "train.steps=4"])
    moldiff.train(b, progress=False)
    b.train.steps = 8
    resumed = moldiff.train(b, resume="auto", progress=False)
    for (k, p), q in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), k
