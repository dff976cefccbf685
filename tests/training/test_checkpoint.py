"""Checkpoint files: the newest intact one is resumed (a kill between writes, a corrupt last.pt), stale
temporaries of dead writers are removed, permissions match every other output."""

import os
import stat
import warnings
from pathlib import Path

import pytest
import torch

import moldiff
from moldiff.fileio import file_mode
from moldiff.training import RunFolder, latest_checkpoint, load_checkpoint

from .toy import toy_config as _cfg



@pytest.fixture
def ckpt_dir(tmp_path) -> Path:
    """A run folder with step_5, step_10 and last.pt (= step 10)."""
    res = moldiff.train(_cfg(tmp_path, "train.steps=10", "train.ckpt_every=5"), progress=False)
    return res.checkpoint.parent


def test_a_numbered_checkpoint_newer_than_last_wins(ckpt_dir):
    """A kill between writing step_N.pt and copying it to last.pt: resume from N, not from the older last.pt."""
    (ckpt_dir / "last.pt").write_bytes((ckpt_dir / "step_00000005.pt").read_bytes())
    path, state = latest_checkpoint(ckpt_dir)
    assert path.name == "step_00000010.pt" and state["step"] == 10


def test_a_corrupt_last_is_skipped_with_a_warning(ckpt_dir):
    (ckpt_dir / "last.pt").write_bytes(b"\x00garbage" * 100)
    with pytest.warns(UserWarning, match="corrupt checkpoint"):
        path, state = latest_checkpoint(ckpt_dir)
    assert path.name == "step_00000010.pt" and state["step"] == 10
    # and training resumes from it instead of stopping
    cfg = _cfg(ckpt_dir.parents[2], "train.steps=15", "train.ckpt_every=5")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = moldiff.train(cfg, resume="auto", progress=False)
    assert res.step == 15 and load_checkpoint(res.checkpoint)["step"] == 15


def test_truncated_newest_falls_back_to_an_older_one(ckpt_dir):
    for name in ("last.pt", "step_00000010.pt"):
        data = (ckpt_dir / name).read_bytes()
        (ckpt_dir / name).write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning):
        path, state = latest_checkpoint(ckpt_dir)
    assert state["step"] == 5


def test_nothing_intact_means_nothing_to_resume(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"x")
    with pytest.warns(UserWarning):
        assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "absent") is None


def test_stale_temporaries_are_removed_when_the_run_is_opened(ckpt_dir):
    stale = [ckpt_dir / ".last.pt.abc123.tmp", ckpt_dir / ".step_00000015.pt.x9.tmp"]
    for p in stale:
        p.write_bytes(b"\x00" * 1000)
    with RunFolder(ckpt_dir.parent):
        assert not any(p.exists() for p in stale)
    assert (ckpt_dir / "last.pt").is_file()


def test_checkpoints_have_the_same_permissions_as_other_outputs(ckpt_dir):
    for p in ckpt_dir.iterdir():
        assert stat.S_IMODE(os.stat(p).st_mode) == file_mode(), p


def test_a_checkpoint_of_diverged_weights_is_not_saved(tmp_path):
    """lr = 1e30: the weights blow up; no checkpoint of them is written, and the error says none is good."""
    cfg = _cfg(tmp_path, "train.steps=60", "train.lr=1e30", "train.ckpt_every=10", "train.max_nonfinite=20")
    with pytest.raises(moldiff.training.NonFiniteLossError, match="none was saved"):
        moldiff.train(cfg, progress=False)
    assert not list((cfg.run_dir / "checkpoints").glob("*.pt"))


def test_good_checkpoints_survive_a_later_divergence(tmp_path):
    cfg = _cfg(tmp_path, "train.steps=10", "train.ckpt_every=5")
    moldiff.train(cfg, progress=False)
    cfg = _cfg(tmp_path, "train.steps=60", "train.ckpt_every=5", "train.lr=1e30")
    with pytest.raises(moldiff.training.NonFiniteLossError, match="last good checkpoint: .*last.pt"):
        moldiff.train(cfg, resume="auto", progress=False)
    state = load_checkpoint(cfg.run_dir / "checkpoints" / "last.pt")
    assert state["step"] == 10
    assert all(torch.isfinite(v).all() and v.abs().max() < 1e3 for v in state["ema"].values())
