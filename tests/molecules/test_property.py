"""EDM's property-conditioning protocol on a tiny split: the halves, the normalisation, the #atoms baseline, a
regressor and a conditional generator trained for a few steps, the protocol and its command, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import moldiff
from moldiff.cli import main
from moldiff.molecules.properties import CONDITIONING_PROPERTIES, PropertyScale, property_values, train_half
from moldiff.molecules.property_protocol import atom_count_predictor, property_protocol
from moldiff.molecules.qm9 import QM9

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"


@pytest.fixture(scope="module")
def qm9():
    return QM9.load(progress=False)


def test_the_halves_split_the_training_split(qm9):
    first, second, whole = train_half(qm9, "first"), train_half(qm9, "second"), train_half(qm9, "")
    assert len(first) == len(second) == 50_000
    assert np.array_equal(np.concatenate([first, second]), whole)
    assert not set(first) & set(second)
    with pytest.raises(ValueError, match="data.half"):
        train_half(qm9, "third")


def test_units_are_edm_s(qm9):
    rows = qm9.split("train")[:100]
    gap = property_values(qm9, "gap", rows)
    assert 1000 < np.median(gap) < 20000  # meV (QM9 gaps are a few eV)
    alpha = property_values(qm9, "alpha", rows)
    assert 20 < np.median(alpha) < 120  # Bohr^3
    assert set(CONDITIONING_PROPERTIES) == {"alpha", "gap", "homo", "lumo", "mu", "cv"}


def test_property_scale_is_mean_and_mean_absolute_deviation():
    s = PropertyScale.fit(np.array([1.0, 2.0, 3.0, 6.0]))
    assert s.mean == 3.0 and s.mad == pytest.approx(1.5)
    assert s.denormalize(s.normalize(7.0)) == pytest.approx(7.0)
    with pytest.raises(ValueError):
        PropertyScale.fit(np.array([1.0, np.nan]))


def test_the_atom_count_predictor_is_the_mean_per_count():
    f = atom_count_predictor(np.array([3, 3, 5]), np.array([1.0, 3.0, 10.0]))
    np.testing.assert_allclose(f(np.array([3, 5, 7])), [2.0, 10.0, 14.0 / 3])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A regressor (first half) and a conditional generator (second half), a few steps each on 200 molecules."""
    root = tmp_path_factory.mktemp("property")
    common = [f"runs_root={root}", "tracking.enabled=false", "train.device=cpu", "data.max_train=200",
              "train.batch_size=16", "train.eval_every=0"]
    reg = moldiff.train(moldiff.load_config(CONFIGS / "qm9_regressor_alpha.yaml", [
        *common, "model.hidden=16", "model.layers=2", "train.steps=6", "train.ckpt_every=6", "eval.n_valid=50"]),
        progress=False)
    gen = moldiff.train(moldiff.load_config(CONFIGS / "qm9_cond_alpha.yaml", [
        *common, "model.hidden=16", "model.edge=8", "model.layers=2", "train.steps=4", "train.ckpt_every=4",
        "eval.n_samples=4", "eval.batch_size=4", "sampler.steps=3", "eval.reference=50"]), progress=False)
    return reg, gen


def test_the_regressor_trains_and_reports_a_validation_mae(trained):
    reg, _ = trained
    assert reg.metrics["valid_mae"] > 0 and np.isfinite(reg.metrics["valid_mae"])


def test_the_protocol_end_to_end(trained):
    reg, gen = trained
    gen_task, gen_model = moldiff.load_model(gen.checkpoint, device="cpu")
    reg_task, reg_model = moldiff.load_model(reg.checkpoint, device="cpu")
    assert gen_task.cfg.data.half == "second" and reg_task.cfg.data.half == "first"
    assert not set(gen_task.train_rows) & set(reg_task.train_rows)
    g = torch.Generator().manual_seed(0)
    res = property_protocol(gen_task, gen_model, reg_task, reg_model, n=6, n_reference=40, steps=3, generator=g)
    assert res.n_generated == 6 and res.n_reference == 40 and res.nfe == 3
    for v in (res.generated, res.lower_bound, res.shuffled, res.atoms_only):
        assert np.isfinite(v) and v >= 0
    # with every reference molecule (n_reference=0), the bounds can be recomputed by hand
    full = property_protocol(gen_task, gen_model, reg_task, reg_model, n=2, n_reference=0, steps=1,
                             generator=torch.Generator().manual_seed(0))
    rows = gen_task.train_rows
    truth = gen_task.property_values(rows)
    pred = reg_task.predict(reg_model, gen_task.qm9.molecules(rows))
    assert full.n_reference == len(rows)
    assert full.lower_bound == pytest.approx(np.abs(pred - truth).mean())
    counts = gen_task.qm9.num_atoms
    by_count = atom_count_predictor(counts[reg_task.train_rows], reg_task.values(reg_task.train_rows))
    assert full.atoms_only == pytest.approx(np.abs(by_count(counts[rows]) - truth).mean())
    # the same seed gives the same result; the table names EDM's published figure
    res2 = property_protocol(gen_task, gen_model, reg_task, reg_model, n=6, n_reference=40, steps=3,
                             generator=torch.Generator().manual_seed(0))
    np.testing.assert_equal(res2.as_dict(), res.as_dict())  # (NaN where no generated molecule is valid)
    assert "2.76" in res.table() and "lower bound" in res.table()


def test_the_protocol_refuses_a_generator_and_regressor_on_the_same_half(trained):
    reg, gen = trained
    gen_task, gen_model = moldiff.load_model(gen.checkpoint, device="cpu", overrides=["data.half=first"])
    reg_task, reg_model = moldiff.load_model(reg.checkpoint, device="cpu")
    with pytest.raises(ValueError, match="different halves"):
        property_protocol(gen_task, gen_model, reg_task, reg_model, n=4, generator=torch.Generator())
    reg_task, reg_model = moldiff.load_model(reg.checkpoint, device="cpu", overrides=["property=gap"])
    gen_task, gen_model = moldiff.load_model(gen.checkpoint, device="cpu")
    with pytest.raises(ValueError, match="conditioned on 'alpha'"):
        property_protocol(gen_task, gen_model, reg_task, reg_model, n=4, generator=torch.Generator())


def test_a_conditional_model_samples_for_given_properties_and_checks_them(trained):
    _, gen = trained
    task, model = moldiff.load_model(gen.checkpoint, device="cpu")
    g = torch.Generator().manual_seed(1)
    mols = task.sample(model, 2, generator=g, progress=False, sizes=np.array([5, 9]), properties=np.array([40., 80.]))
    assert [m.num_atoms for m in mols] == [5, 9]
    with pytest.raises(ValueError, match="properties must be 2 finite"):
        task.sample(model, 2, generator=g, progress=False, sizes=np.array([5, 9]), properties=np.array([1., np.nan]))
    with pytest.raises(ValueError, match="property of every molecule"):
        task.sample(model, 2, generator=g, progress=False, sizes=np.array([5, 9]))


def test_the_command(trained, tmp_path, capsys):
    reg, gen = trained
    out = tmp_path / "r.json"
    rc = main(["qm9-property", "--generator", str(gen.checkpoint), "--regressor", str(reg.checkpoint), "-n", "4",
               "--reference", "20", "--steps", "2", "--json", str(out), "--figure", str(tmp_path / "f.png"),
               "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "MAE" in captured.out
    data = json.loads(out.read_text())
    assert data["property"] == "alpha" and data["n_generated"] == 4
    assert (tmp_path / "f.png").stat().st_size > 1000
    # the generator and regressor swapped: a clear error, nothing written
    rc = main(["qm9-property", "--generator", str(reg.checkpoint), "--regressor", str(gen.checkpoint), "-n", "4",
               "--json", str(tmp_path / "x.json"), "--no-progress"])
    assert rc == 2 and "qm9_flow checkpoint is needed" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
