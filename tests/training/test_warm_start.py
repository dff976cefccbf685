"""Warm starts (``train.init``) and lineage: a run that starts from another run's EMA weights computes the same
loss at step 0; a source of another task or shape is refused before training, naming both; the lineage adds up
over resumes and warm starts."""

import pytest
import torch

import moldiff
from moldiff.tasks import get_task
from moldiff.training import load_checkpoint
from moldiff.training.checkpoint import CheckpointError
from moldiff.training.lineage import Lineage, Segment, recipe_key
from moldiff.training.trainer import step_seed

from .toy import toy_config as _cfg


@pytest.fixture
def source(tmp_path):
    return moldiff.train(_cfg(tmp_path / "a", "train.steps=12", "train.ckpt_every=12"), progress=False)


def _loss(cfg, state_dict, step: int = 0) -> torch.Tensor:
    task = get_task(cfg.task)(cfg)
    with torch.random.fork_rng(devices=[]):
        model = task.build_model()
    model.load_state_dict(state_dict)
    batch = next(task.train_batches(start_step=step, rank=0, world_size=1, device=torch.device("cpu")))
    gen = torch.Generator().manual_seed(step_seed(cfg.seed, 0, step))
    with torch.no_grad():
        return task.loss(model, batch, gen).mean()


def test_the_loss_at_step_0_equals_the_source_models(source, tmp_path):
    cfg = _cfg(tmp_path / "b", "train.steps=0", f"train.init={source.checkpoint}")
    res = moldiff.train(cfg, progress=False)
    state = load_checkpoint(res.checkpoint)
    ema = load_checkpoint(source.checkpoint)["ema"]
    for k, v in ema.items():  # the source's EMA weights, in both the raw network and its EMA copy
        assert torch.equal(state["model"][k], v) and torch.equal(state["ema"][k], v)
    assert _loss(cfg, state["model"]) == _loss(cfg, ema)
    assert state["optimizer"]["state"] == {}  # a fresh optimiser


def test_a_warm_start_trains_on_with_a_fresh_optimiser_and_counts_its_lineage(source, tmp_path):
    res = moldiff.train(_cfg(tmp_path / "b", "train.steps=5", "train.ckpt_every=5", f"train.init={source.checkpoint}"),
                        progress=False)
    lin = Lineage.from_dict(load_checkpoint(res.checkpoint)["lineage"])
    assert lin.steps == 17 and len(lin.segments) == 2 and lin.samples_seen == 17 * 256
    assert lin.segments[1].init.startswith("checkpoint") and lin.segments[0].init == ""
    assert lin.cpu_hours > 0 and lin.gpu_minutes == 0
    assert len(lin.recipes) == 1  # the same recipe: the run's name and length are not part of it
    # a resume adds a segment of its own
    res = moldiff.train(_cfg(tmp_path / "b", "train.steps=8", "train.ckpt_every=5", f"train.init={source.checkpoint}"),
                        resume="auto", progress=False)
    lin2 = Lineage.from_dict(load_checkpoint(res.checkpoint)["lineage"])
    assert lin2.steps == 20 and [s.end_step for s in lin2.segments] == [12, 5, 8]
    assert lin2.cpu_hours > lin.cpu_hours


def test_a_source_of_another_shape_is_refused_naming_both_shapes(source, tmp_path):
    with pytest.raises(CheckpointError, match=r"source \(32, ?\d*\).*this network \(48") as e:
        moldiff.train(_cfg(tmp_path / "b", "train.steps=3", "model.width=48", f"train.init={source.checkpoint}"),
                      progress=False)
    assert "train.init" in str(e.value)
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").rglob("*.pt"))  # refused before training


def test_a_source_of_another_task_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="'qm9_flow' model; this run trains 'toy2d'"):
        moldiff.train(_cfg(tmp_path, "train.steps=3", "train.init=pretrained:qm9"), progress=False)


@pytest.mark.parametrize("init, match", [("nowhere.pt", "not found"), ("pretrained:nope", "unknown pretrained"),
                                         (".", "is a folder")])
def test_a_missing_source_is_named(tmp_path, init, match):
    with pytest.raises(CheckpointError, match=f"train.init.*{match}"):
        moldiff.train(_cfg(tmp_path, "train.steps=3", f"train.init={init}"), progress=False)


def test_a_file_without_ema_weights_is_refused(tmp_path):
    bad = tmp_path / "x.pt"
    torch.save({"model": {}, "task": "toy2d"}, bad)
    with pytest.raises(CheckpointError, match="no EMA weights"):
        moldiff.train(_cfg(tmp_path, "train.steps=3", f"train.init={bad}"), progress=False)


def test_lineage_sums_segments_and_keys_recipes_without_run_lengths():
    a = {"task": "t", "name": "x", "train": {"steps": 10, "lr": 1e-3, "max_cpu_minutes": 5}, "model": {"w": 1}}
    b = {"task": "t", "name": "y", "train": {"steps": 99, "lr": 1e-3, "max_cpu_minutes": 0}, "model": {"w": 1}}
    c = {**a, "model": {"w": 2}}
    assert recipe_key(a) == recipe_key(b) != recipe_key(c)
    lin = Lineage().with_segment(Segment("", "x", 0, 10, cpu_hours=0.5, samples=640), a)
    lin = lin.with_segment(Segment("", "y", 0, 4, gpu_minutes=2.0, samples=1024, device="cuda"), c)
    assert (lin.steps, lin.samples_seen, lin.cpu_hours, lin.gpu_minutes, len(lin.recipes)) == (14, 1664, 0.5, 2.0, 2)
    assert Lineage.from_dict(lin.to_dict()) == lin
    assert "steps" not in lin.recipes[recipe_key(a)]["train"]
