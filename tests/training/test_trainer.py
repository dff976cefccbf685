"""The trainer: exact resume, non-finite steps, checkpoints, EMA, DDP (2 processes, gloo)."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import moldiff
from moldiff.training import CheckpointError, NonFiniteLossError, load_checkpoint, save_checkpoint
from moldiff.training.interrupts import TrainingInterrupted
from physics.toy2d import Toy2DTask

from .toy import ROOT, SMOKE, toy_config as _cfg



def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.usefixtures("global_rng")
def test_resume_is_exact(tmp_path):
    """k steps + resume + k steps == 2k steps: model, EMA and optimizer state bit for bit (CPU)."""
    full = moldiff.train(_cfg(tmp_path / "a", "train.steps=30", "train.ckpt_every=10"), progress=False)
    half = moldiff.train(_cfg(tmp_path / "b", "train.steps=15", "train.ckpt_every=10"), progress=False)
    assert half.step == 15
    rest = moldiff.train(_cfg(tmp_path / "b", "train.steps=30", "train.ckpt_every=10"), resume="auto", progress=False)
    assert rest.step == 30
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(rest.checkpoint)
    assert _states_equal(a["model"], b["model"])
    assert _states_equal(a["ema"], b["ema"])
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(_states_equal(sa[k], sb[k]) for k in sa)
    # and training did something
    init = Toy2DTask(_cfg(tmp_path / "c")).build_model().state_dict()
    assert not _states_equal(a["model"], init)


@pytest.mark.usefixtures("global_rng")
def test_max_minutes_stops_early_saves_and_resumes_exactly(tmp_path):
    """A time budget smaller than one step stops after the first step with a checkpoint; resuming without the budget
    finishes the run with the same weights as an uninterrupted one."""
    full = moldiff.train(_cfg(tmp_path / "a", "train.steps=6"), progress=False)
    cut = moldiff.train(_cfg(tmp_path / "b", "train.steps=6", "train.max_minutes=1e-9"), progress=False)
    assert cut.step == 1 and load_checkpoint(cut.checkpoint)["step"] == 1
    cpu = moldiff.train(_cfg(tmp_path / "c", "train.steps=6", "train.max_cpu_minutes=1e-9"), progress=False)
    assert cpu.step == 1
    rest = moldiff.train(_cfg(tmp_path / "b", "train.steps=6"), resume="auto", progress=False)
    assert rest.step == 6
    assert _states_equal(load_checkpoint(full.checkpoint)["model"], load_checkpoint(rest.checkpoint)["model"])


def test_resume_auto_without_checkpoint_starts_fresh_and_missing_path_fails(tmp_path):
    res = moldiff.train(_cfg(tmp_path, "train.steps=3"), resume="auto", progress=False)
    assert res.step == 3 and res.checkpoint.is_file()
    with pytest.raises(CheckpointError, match="not found"):
        moldiff.train(_cfg(tmp_path, "train.steps=3"), resume=tmp_path / "nope.pt", progress=False)


class _NaNTask(Toy2DTask):
    """Toy task whose loss is NaN on chosen steps."""

    name = "nan_toy"
    bad_steps: set = set()

    def train_batches(self, *, start_step, **kw):
        for i, b in enumerate(super().train_batches(start_step=start_step, **kw)):
            yield start_step + i, b

    def loss(self, model, batch, generator):
        step, x = batch
        out = super().loss(model, x, generator)
        return out * float("nan") if step in self.bad_steps else out


def test_nonfinite_steps_are_skipped_and_counted(tmp_path):
    cfg = _cfg(tmp_path, "train.steps=12")
    task = _NaNTask(cfg)
    task.bad_steps = {0, 4, 5}
    res = moldiff.training.train(cfg, task=task, progress=False)
    assert res.nonfinite_steps == 3
    state = load_checkpoint(res.checkpoint)
    assert state["nonfinite_total"] == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    # a skipped update leaves parameters and Adam's step count untouched
    opt_steps = {int(s["step"]) for s in state["optimizer"]["state"].values()}
    assert opt_steps == {12 - 3}


def test_skipped_first_step_changes_nothing(tmp_path):
    cfg = _cfg(tmp_path, "train.steps=1")
    task = _NaNTask(cfg)
    task.bad_steps = {0}
    res = moldiff.training.train(cfg, task=task, progress=False)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        init = Toy2DTask(cfg).build_model().state_dict()
    assert _states_equal(res.model.state_dict(), init)
    assert _states_equal(res.ema_model.state_dict(), init)


def test_too_many_nonfinite_in_a_row_aborts(tmp_path):
    cfg = _cfg(tmp_path, "train.steps=40", "train.max_nonfinite=4", "train.ckpt_every=5")
    task = _NaNTask(cfg)
    task.bad_steps = set(range(7, 100))
    with pytest.raises(NonFiniteLossError, match="4 non-finite"):
        moldiff.training.train(cfg, task=task, progress=False)
    # the last checkpoint is intact and finite
    state = load_checkpoint(cfg.run_dir / "checkpoints" / "last.pt")
    assert state["step"] == 10
    assert all(torch.isfinite(v).all() for v in state["model"].values())


class _SignalWhileLoadingTask(Toy2DTask):
    """Toy task that sends itself SIGTERM while loading the batch of step ``signal_step``."""

    name = "signal_toy"
    signal_step = 7

    def train_batches(self, *, start_step, **kw):
        for i, b in enumerate(super().train_batches(start_step=start_step, **kw)):
            if start_step + i == self.signal_step:
                os.kill(os.getpid(), signal.SIGTERM)
            yield b


def test_a_signal_while_a_batch_loads_stops_after_that_step(tmp_path):
    """Loading a batch is part of the deferred iteration (under DDP, a rank raising there would leave the others in
    the next step's all-reduce): the step still runs, then the trainer saves it and stops."""
    cfg = _cfg(tmp_path, "train.steps=50", "train.ckpt_every=100")
    with pytest.raises(TrainingInterrupted, match="SIGTERM at step 8"):
        moldiff.training.train(cfg, task=_SignalWhileLoadingTask(cfg), progress=False)
    assert load_checkpoint(cfg.run_dir / "checkpoints" / "last.pt")["step"] == 8


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    res = moldiff.train(_cfg(tmp_path, "train.steps=20", "train.ckpt_every=4", "train.keep_checkpoints=2"),
                        progress=False)
    files = sorted(p.name for p in res.checkpoint.parent.iterdir())
    assert files == ["last.pt", "step_00000016.pt", "step_00000020.pt"]  # no temporary files left
    # a failing write leaves the previous file in place
    target = tmp_path / "x.pt"
    save_checkpoint({"model": {}, "config": {}, "a": 1}, target)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint({"model": {}, "config": {}, "a": Boom()}, target)
    assert load_checkpoint(target)["a"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    target.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(target)


def test_ema_tracks_parameters(tmp_path):
    res = moldiff.train(_cfg(tmp_path, "train.steps=10", "train.ema_decay=0.0"), progress=False)
    assert _states_equal(res.model.state_dict(), res.ema_model.state_dict())
    res = moldiff.train(_cfg(tmp_path / "b", "train.steps=10", "train.ema_decay=0.9"), progress=False)
    assert not _states_equal(res.model.state_dict(), res.ema_model.state_dict())


def test_warmup_schedule(tmp_path):
    cfg = _cfg(tmp_path, "train.steps=4", "train.warmup_steps=4", "train.lr=0.01", "train.log_every=1",
               "tracking.enabled=true")
    res = moldiff.train(cfg, progress=False)
    from mlflow.tracking import MlflowClient

    hist = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_metric_history(res.run_id, "train/lr")
    assert [round(m.value, 6) for m in sorted(hist, key=lambda m: m.step)] == [0.005, 0.0075, 0.01, 0.01]


DDP_SCRIPT = textwrap.dedent(
    """
    import os, sys, torch
    import moldiff
    cfg = moldiff.load_config(sys.argv[1], sys.argv[3:])
    res = moldiff.train(cfg, progress=False)
    torch.save(res.model.state_dict(), os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.pt"))
    """
)


def test_ddp_two_processes_gloo(tmp_path):
    """torchrun with 2 CPU processes: parameters stay identical across ranks; rank 0 alone saves and logs."""
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    overrides = [f"runs_root={tmp_path / 'runs'}", "train.steps=8", "eval.samplers=[]", "eval.nll_points=0",
                 "eval.n_samples=100", "model.width=32", "tracking.enabled=true"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), str(SMOKE), str(tmp_path), *overrides]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert _states_equal(r0, r1)
    ckpt = load_checkpoint(tmp_path / "runs" / "smoke" / "toy2d_vp" / "checkpoints" / "last.pt")
    assert _states_equal(ckpt["model"], r0) and ckpt["step"] == 8
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'runs'}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert len(runs) == 1 and runs[0].data.tags["env.world_size"] == "2"
