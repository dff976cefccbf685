"""The graph flow-matching recipe end to end on CPU: smoke train -> sample (SDF with bonds, RDKit molecules)
-> both evaluation protocols -> MLflow; the shipped model; bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import moldiff
from moldiff.cli import main
from moldiff.molecules.flow_task import (
    FAKE,
    QM9FlowConfig,
    QM9FlowTask,
    batch_from_molecules,
    fake_counts,
    padded_size_distribution,
)
from moldiff.molecules.graph_mol import GraphMolecule, read_graph_sdf, write_graph_sdf
from moldiff.pretrained import PRETRAINED, load_pretrained_file, pretrained_path
from moldiff.training.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke" / "qm9_flow.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("qm9flow")
    cfg = moldiff.load_config(SMOKE, [f"runs_root={root}", "train.steps=20", "train.ckpt_every=20",
                                      "eval.n_samples=6", "eval.batch_size=4", "sampler.steps=5",
                                      "eval.mmff=4", "train.device=cpu"])
    return cfg, moldiff.train(cfg, progress=False)


def test_batches_hold_every_pair_once_and_the_loss_is_per_molecule():
    cfg = QM9FlowConfig()
    cfg.model.hidden, cfg.model.edge, cfg.model.layers, cfg.data.max_train, cfg.train.batch_size = 16, 8, 2, 64, 8
    task = QM9FlowTask(cfg)
    batch = next(task.train_batches(start_step=0, rank=0, world_size=1, device="cpu"))
    sizes = torch.bincount(batch.batch, minlength=8)
    assert batch.pair_index.shape[1] == int((sizes * (sizes - 1) // 2).sum())
    assert (batch.pair_index[0] < batch.pair_index[1]).all()
    assert (batch.batch[batch.pair_index[0]] == batch.pair_graph).all()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = task.build_model()
    loss = task.loss(model, batch, torch.Generator().manual_seed(0))
    assert loss.shape == (8,) and torch.isfinite(loss).all()
    mols = task.sample(model, 5, generator=torch.Generator().manual_seed(1),
                       sampler=moldiff.SamplerConfig(name="ode_euler", steps=3), progress=False)
    support, _ = task.size_distribution()
    assert len(mols) == 5 and all(m.num_atoms in support for m in mols)
    for m in mols:
        assert np.abs(m.positions.mean(0)).max() < 1e-4
        assert ((m.bonds[:, 0] < m.bonds[:, 1]).all() if len(m.bonds) else True)
        assert set(m.charges.tolist()) <= {-1, 0, 1}


def test_batch_round_trip_of_real_molecules():
    cfg = QM9FlowConfig()
    cfg.data.max_train = 32
    task = QM9FlowTask(cfg)
    mols = [task.molecule(r) for r in task.train_rows[:4]]
    b = batch_from_molecules(mols)
    from moldiff.diffusion import MixedState

    state = MixedState(b.pos, {"atoms": b.atoms, "charges": b.charges, "bonds": b.bonds})
    back = task.decode(state, b, np.array([m.num_atoms for m in mols]))
    for a, c in zip(mols, back):
        np.testing.assert_array_equal(a.atomic_numbers, c.atomic_numbers)
        np.testing.assert_array_equal(a.charges, c.charges)
        np.testing.assert_array_equal(a.bonds, c.bonds)


def test_fake_atoms_are_added_without_bonds_and_deleted_by_decode():
    """FlowMol3's fake atoms: appended per molecule (class FAKE, charge 0, no bond to anything), positions beside a
    real atom, the whole molecule re-centred; decoding deletes them with any bond to them and renumbers the rest."""
    water = GraphMolecule([8, 1, 1], [0, 0, 0], [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], [(0, 1, 1), (0, 2, 1)])
    methane = GraphMolecule([6, 1, 1, 1, 1], [0] * 5, [[0, 0, 0], [1.09, 0, 0], [-0.36, 1.03, 0], [-0.36, -0.51, 0.89],
                                                       [-0.36, -0.51, -0.89]], [(0, k, 1) for k in range(1, 5)])
    rng = np.random.default_rng(0)
    b = batch_from_molecules([water, methane], np.array([2, 1]), rng, fake_spread=0.5)
    assert torch.bincount(b.batch).tolist() == [5, 6]
    assert b.atoms.tolist().count(FAKE) == 3 and (b.charges[b.atoms == FAKE] == 1).all()  # charge class 1 is 0
    fake = (b.atoms == FAKE).numpy()
    touches = fake[b.pair_index[0].numpy()] | fake[b.pair_index[1].numpy()]
    assert (b.bonds.numpy()[touches] == 0).all() and (b.bonds.numpy()[~touches] > 0).sum() == 6
    com = torch.zeros(2, 3).index_add_(0, b.batch, b.pos)
    assert com.abs().max() < 1e-5
    # decode: a bond generated to a fake atom is dropped with it; the real atoms keep their bonds and order
    from moldiff.diffusion import MixedState

    bonds = b.bonds.clone()
    bonds[(b.pair_index[0] == 1) & (b.pair_index[1] == 3)] = 1  # H(1) bonded to a fake atom (3)
    state = MixedState(b.pos, {"atoms": b.atoms, "charges": b.charges, "bonds": bonds})
    back = QM9FlowTask.decode(state, b, np.array([5, 6]))
    for orig, got in zip([water, methane], back):
        np.testing.assert_array_equal(got.atomic_numbers, orig.atomic_numbers)
        np.testing.assert_array_equal(got.bonds, orig.bonds)
        np.testing.assert_allclose(got.positions.mean(0), 0, atol=1e-6)


def test_the_padded_size_distribution_is_that_of_real_plus_fake_atoms():
    support, probs = np.array([3, 10]), np.array([0.25, 0.75])
    sizes, p = padded_size_distribution(support, probs, 0.2)  # k in {0} for n = 3, {0, 1, 2} for n = 10
    assert sizes.tolist() == [3, 10, 11, 12]
    np.testing.assert_allclose(p, [0.25, 0.25, 0.25, 0.25])
    k = fake_counts(np.full(30_000, 10), 0.2, np.random.default_rng(1))
    assert set(k.tolist()) == {0, 1, 2} and abs(k.mean() - 1.0) < 0.03


def test_smoke_train_logs_both_protocols_to_mlflow(trained):
    from mlflow.tracking import MlflowClient

    cfg, res = trained
    for k in ("graph/mol_stability", "graph/validity", "edm/mol_stability", "dist/atom_tv", "geom/clash_rate"):
        assert k in res.metrics and math.isfinite(res.metrics[k])
    client = MlflowClient(tracking_uri=f"sqlite:///{Path(cfg.runs_root) / 'mlflow.db'}")
    run = client.get_run(res.run_id)
    assert run.info.status == "FINISHED" and "graph/validity" in run.data.metrics
    arts = {a.path for a in client.list_artifacts(res.run_id, "figures/step_0000020")}
    assert any(a.endswith("molecules.png") for a in arts), arts


def test_sample_writes_bonds_and_charges_and_eval_graph_cli(trained, tmp_path, capsys):
    _, res = trained
    out = tmp_path / "mols.sdf"
    assert main(["sample", str(res.checkpoint), "-n", "5", "--out", str(out), "--steps", "4", "--no-progress"]) == 0
    mols = read_graph_sdf(out)
    assert len(mols) == 5 and all(isinstance(m, GraphMolecule) for m in mols)
    api = moldiff.sample(res.checkpoint, 3, steps=4, seed=7, progress=False)
    again = moldiff.sample(res.checkpoint, 3, steps=4, seed=7, progress=False)
    for a, b in zip(api, again):  # seeded
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.bonds, b.bonds)
    assert all(m.to_rdkit().GetNumAtoms() == m.num_atoms for m in api)
    capsys.readouterr()
    assert main(["eval-molecules", str(out), "--graph", "--no-novelty", "--json", str(tmp_path / "g.json"), "--no-progress"]) == 0
    data = json.loads((tmp_path / "g.json").read_text())
    assert "graph/validity" in data and "edm/validity" in data and "failures" in data
    assert main(["sample", str(res.checkpoint), "-n", "2", "--out", str(tmp_path / "m.xyz")]) == 2


def _write(tmp_path, name, mol):
    path = tmp_path / name
    write_graph_sdf(path, [mol])
    return path


def test_sample_and_eval_with_relaxation(trained, tmp_path, capsys):
    _, res = trained
    out = tmp_path / "r.sdf"
    assert main(["sample", str(res.checkpoint), "-n", "4", "--steps", "3", "--out", str(out), "--relax",
                 "--relax-iters", "20"]) == 0
    assert "relaxed" in capsys.readouterr().err and len(read_graph_sdf(out)) == 4
    assert main(["eval-molecules", str(out), "--graph", "--relax", "uff", "--no-novelty", "--no-progress",
                 "--relaxed-out", str(tmp_path / "rr.sdf"), "--json", str(tmp_path / "r.json")]) == 0
    text = capsys.readouterr().out
    assert "generated" in text and "relaxed" in text and "graph/validity" in text
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["generated"]["graph/validity"] == data["relaxed"]["graph/validity"]
    assert len(read_graph_sdf(tmp_path / "rr.sdf")) == 4
    # misuse: named, exit 2, nothing written
    assert main(["eval-molecules", str(out), "--relax"]) == 2
    assert "need --graph" in capsys.readouterr().err
    assert main(["sample", str(res.checkpoint), "-n", "2", "--out", str(tmp_path / "x.sdf"), "--relax", "amber"]) == 2
    assert "unknown method" in capsys.readouterr().err and not (tmp_path / "x.sdf").exists()


def test_bad_molecule_files_exit_2_naming_the_problem(tmp_path, capsys):
    ch4 = GraphMolecule([6, 1, 1, 1, 1], [0] * 5, np.eye(5, 3) * 1.1, [[0, k, 1] for k in range(1, 5)])
    chlorine = GraphMolecule([6, 17], [0, 0], [[0, 0, 0], [1.8, 0, 0]], [[0, 1, 1]])
    dication = GraphMolecule([7, 1], [2, 0], [[0, 0, 0], [1.0, 0, 0]], [[0, 1, 1]])
    cases = {"cl.sdf": (chlorine, "atomic number [17]"), "q.sdf": (dication, "formal charge(s) [2]")}
    for name, (mol, msg) in cases.items():
        capsys.readouterr()
        assert main(["eval-molecules", str(_write(tmp_path, name, mol)), "--graph", "--no-novelty", "--no-progress"]) == 2
        assert msg in capsys.readouterr().err
    # a bond block RDKit rejects (atom index out of range) and a truncated file
    text = _write(tmp_path, "ok.sdf", ch4).read_text()
    (tmp_path / "badbond.sdf").write_text(text.replace("  1  2  1  0", "  1  9  1  0"))
    (tmp_path / "cut.sdf").write_text(text[: len(text) // 2])
    for name in ("badbond.sdf", "cut.sdf"):
        capsys.readouterr()
        assert main(["eval-molecules", str(tmp_path / name), "--graph", "--no-novelty", "--no-progress"]) == 2
        assert "moldiff: error" in capsys.readouterr().err
    assert main(["sample", "--pretrained", "nope", "-n", "2", "--out", str(tmp_path / "x.sdf")]) == 2
    assert "unknown pretrained model 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "x.sdf").exists()
    # an empty file is named, in both protocols
    (tmp_path / "empty.sdf").write_text("")
    for extra in (["--graph"], []):
        assert main(["eval-molecules", str(tmp_path / "empty.sdf"), "--no-novelty", "--no-progress", *extra]) == 2
        assert "empty.sdf: holds no molecules" in capsys.readouterr().err


def test_an_unwritable_output_is_refused_before_sampling(tmp_path, capsys, monkeypatch):
    import moldiff.api as api

    monkeypatch.setattr(api, "load_model", lambda *a, **k: pytest.fail("the model was loaded before the check"))
    for out in ("/proc/moldiff_test.sdf", str(tmp_path / "ro" / "x.sdf")):
        if "ro" in out:  # a folder that refuses new files (as root, permission bits do not; a file in the way does)
            (tmp_path / "ro").write_text("a file where the folder should be")
        assert main(["sample", "--pretrained", "qm9", "-n", "2", "--out", out]) == 2
        err = capsys.readouterr().err
        assert f"cannot write {out}" in err and ".tmp" not in err and ".probe" not in err


def test_a_shipped_file_given_as_a_checkpoint(tmp_path, capsys):
    path = pretrained_path("qm9")
    assert main(["sample", str(path), "-n", "2", "--steps", "3", "--out", str(tmp_path / "s.sdf"), "--no-progress"]) == 0
    assert len(read_graph_sdf(tmp_path / "s.sdf")) == 2  # sampled as the shipped model it is
    assert main(["train", "qm9_flow_cpu", "--resume", str(path), "--set", f"runs_root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "a shipped model file" in err and "--pretrained qm9" in err and "train.init=pretrained:qm9" in err


def test_the_shipped_model_loads_strictly_and_samples(tmp_path):
    path = pretrained_path("qm9")
    assert path.stat().st_size <= 10 * 2**20
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state["task"] == "qm9_flow" and all(v.dtype != torch.float32 for v in state["ema"].values()
                                               if v.is_floating_point())
    # what sampling needs travels with the file, and the file says what went into it
    assert set(state["sampling"]) >= {"size_support", "size_probs", "vocabulary"}
    assert state["lineage"]["cpu_hours"] > 0 and state["lineage"]["steps"] >= state["step"]
    model = moldiff.pretrained("qm9", device="cpu")
    mols = model.sample(4, steps=10, seed=1)
    assert len(mols) == 4 and all(m.num_atoms >= 1 for m in mols)
    assert all(np.isfinite(m.positions).all() for m in mols)
    out = tmp_path / "p.sdf"
    assert main(["sample", "--pretrained", "qm9", "-n", "3", "--steps", "10", "--out", str(out), "--no-progress"]) == 0
    assert len(read_graph_sdf(out)) == 3
    assert "qm9" in PRETRAINED


def test_a_shipped_file_samples_without_the_dataset(trained, tmp_path, monkeypatch):
    """The exported file carries the size histogram and vocabularies: with an empty cache folder and HOME,
    sampling and completion read no dataset and write nothing there."""
    from moldiff.pretrained import export_pretrained

    _, res = trained
    path = export_pretrained(res.checkpoint, tmp_path / "m.pt")
    empty = tmp_path / "cache"
    empty.mkdir()
    monkeypatch.setenv("MOLDIFF_CACHE", str(empty))
    monkeypatch.setenv("HOME", str(empty))
    task, model, state = load_pretrained_file(path, "cpu")
    assert set(state["sampling"]) >= {"size_support", "size_probs", "vocabulary"}
    assert task._qm9 is None
    gen = torch.Generator().manual_seed(0)
    mols = task.sample(model, 5, generator=gen, sampler=moldiff.SamplerConfig(name="ode_euler", steps=3),
                       progress=False)
    ring = GraphMolecule([6] * 3, [0] * 3, [[0, 0, 0], [1.5, 0, 0], [0.75, 1.3, 0]], [(0, 1, 1), (1, 2, 1), (0, 2, 1)])
    mols += task.sample(model, 2, generator=gen, sampler=moldiff.SamplerConfig(name="ode_euler", steps=3),
                        progress=False, scaffold=ring)
    assert len(mols) == 7 and task._qm9 is None and not any(empty.iterdir())
    support = state["sampling"]["size_support"].numpy()
    assert all(m.num_atoms in support for m in mols)


def test_a_self_conditioned_warm_start_begins_where_its_source_ended(trained, tmp_path):
    """Warm start of a self-conditioned recipe from a plain checkpoint: the added projections start at zero, so
    the loss at step 0 is the source's on the same batch and noise."""
    from moldiff.tasks import get_task
    from moldiff.training import load_checkpoint
    from moldiff.training.trainer import step_seed

    cfg, res = trained
    sc = moldiff.load_config(SMOKE, [f"runs_root={tmp_path}", "train.steps=0", "eval.n_samples=0", "train.device=cpu",
                                     "flow.self_condition=true", f"train.init={res.checkpoint}",
                                     "tracking.enabled=false"])
    warm = moldiff.train(sc, progress=False)
    losses = []
    for c, weights in ((cfg, load_checkpoint(res.checkpoint)["ema"]), (sc, load_checkpoint(warm.checkpoint)["model"])):
        task = get_task(c.task)(c)
        with torch.random.fork_rng(devices=[]):
            model = task.build_model()
        model.load_state_dict(weights)
        batch = next(task.train_batches(start_step=0, rank=0, world_size=1, device="cpu"))
        for seed in range(4):  # some of these batches take the self-conditioning pass
            with torch.no_grad():
                losses.append(task.loss(model, batch, torch.Generator().manual_seed(step_seed(0, 0, seed))))
    for a, b in zip(losses[:4], losses[4:]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_training_checkpoint_is_not_a_shipped_model(trained):
    _, res = trained
    with pytest.raises(CheckpointError, match="pretrained model"):
        load_pretrained_file(res.checkpoint)


def test_scaffold_completion_keeps_the_scaffold_and_checks_it():
    """Inpainting with the shipped model: every molecule starts with the given atoms -- same elements, charges,
    bonds among them and positions -- and has the requested size; bad scaffolds are refused."""
    model = moldiff.pretrained("qm9", device="cpu")
    ring = GraphMolecule([6] * 6, [0] * 6, [[1.39 * np.cos(a), 1.39 * np.sin(a), 0.0] for a in np.arange(6) * np.pi / 3],
                         [(0, 1, 2), (1, 2, 1), (2, 3, 2), (3, 4, 1), (4, 5, 2), (0, 5, 1)])
    sizes = np.array([12, 9, 15])
    mols = model.complete(ring, 3, steps=4, sizes=sizes, resample=2, noise=1.0, seed=0)
    assert [m.num_atoms for m in mols] == list(sizes)
    for m in mols:
        np.testing.assert_allclose(m.positions[:6], ring.positions, atol=1e-5)
        assert (m.atomic_numbers[:6] == 6).all() and (m.charges[:6] == 0).all()
        inner = {(int(i), int(j), int(o)) for i, j, o in m.bonds if i < 6 and j < 6}
        assert inner == {(int(i), int(j), int(o)) for i, j, o in ring.bonds}
    with pytest.raises(ValueError, match="scaffold's 6 atoms"):
        model.complete(ring, 2, steps=2, sizes=np.array([12, 5]))
    with pytest.raises(moldiff.molecules.UnsupportedElementError, match="scaffold"):
        model.complete(GraphMolecule([6, 17], [0, 0], [[0, 0, 0], [1.7, 0, 0]], [(0, 1, 1)]), 2, steps=2)
