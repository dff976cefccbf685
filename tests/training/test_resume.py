"""What a resume may change: steps, learning rate, logging, sampling, evaluation -- applied; anything that
defines the weights or the data stream -- refused, naming the key, before any weights are loaded."""

import pytest

import moldiff
from moldiff.config import ConfigError, ExperimentConfig
from moldiff.training import load_checkpoint
from moldiff.training.resume import resume_changes

from .toy import toy_config as _cfg



@pytest.fixture
def first(tmp_path):
    return moldiff.train(_cfg(tmp_path, "train.steps=10", "train.ckpt_every=10", "train.warmup_steps=4"),
                         progress=False)


def test_a_new_learning_rate_takes_effect(first, tmp_path):
    res = moldiff.train(_cfg(tmp_path, "train.steps=12", "train.lr=5e-5", "train.weight_decay=0.01",
                             "train.warmup_steps=4"), resume="auto", progress=False)
    groups = load_checkpoint(res.checkpoint)["optimizer"]["param_groups"]
    assert all(g["lr"] == pytest.approx(5e-5) and g["weight_decay"] == 0.01 for g in groups)
    # the schedule's base moved too: a later resume without the override goes back to the config's value
    res = moldiff.train(_cfg(tmp_path, "train.steps=14", "train.warmup_steps=4"), resume="auto", progress=False)
    assert all(g["lr"] == pytest.approx(2e-3) for g in load_checkpoint(res.checkpoint)["optimizer"]["param_groups"])


def test_a_resumed_warmup_follows_the_new_length(first, tmp_path):
    res = moldiff.train(_cfg(tmp_path, "train.steps=11", "train.warmup_steps=100"), resume="auto", progress=False)
    groups = load_checkpoint(res.checkpoint)["optimizer"]["param_groups"]
    assert groups[0]["lr"] == pytest.approx(2e-3 * 12 / 100)  # LambdaLR: (step + 1) / warmup after 11 steps


@pytest.mark.parametrize("override, key", [
    ("model.width=64", "model.width"),
    ("seed=1", "seed"),
    ("process.beta_max=10.0", "process.beta_max"),
    ("train.batch_size=32", "train.batch_size"),
    ("data.target=two_moons", "data.target"),
])
def test_changes_that_redefine_the_weights_are_refused(first, tmp_path, override, key):
    with pytest.raises(ConfigError, match=f"cannot resume with a different {key}") as e:
        moldiff.train(_cfg(tmp_path, "train.steps=20", "train.warmup_steps=4", override), resume="auto",
                      progress=False)
    assert "Keys that may change on resume" in str(e.value) and "size mismatch" not in str(e.value)
    assert load_checkpoint(first.checkpoint)["step"] == 10  # nothing touched


def test_resume_changes_lists_allowed_differences_only():
    a, b = ExperimentConfig(task="t"), ExperimentConfig(task="t")
    b.train.lr, b.sampler.steps, b.tracking.experiment = 1e-5, 3, "other"
    saved = moldiff.config.to_dict(a)
    assert set(resume_changes(saved, b)) == {"train.lr", "sampler.steps", "tracking.experiment"}
    del saved["train"]["lr"]  # an option the checkpoint's version did not have is not a change
    assert "train.lr" not in resume_changes(saved, b)
