"""A run folder belongs to one run: a second live writer is refused, a fresh run over old checkpoints is
refused (or, with ``overwrite``, starts clean), SIGTERM / Ctrl-C end the run cleanly, and kill -9 at any
moment loses nothing a resume cannot recover.  Real processes throughout."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import moldiff
from moldiff.training import RunFolder, RunFolderError, latest_checkpoint, load_checkpoint

from .toy import FAST as _FAST
from .toy import ROOT, SMOKE, toy_config as _cfg

#: the toy run's overrides, tracking left to each test
FAST = [s for s in _FAST if not s.startswith("tracking.")]


def _start(root: Path, *sets: str, resume: bool = False) -> subprocess.Popen:
    args = [sys.executable, "-m", "moldiff", "train", str(SMOKE), "--no-progress", "--set", f"runs_root={root}"]
    for s in [*FAST, *sets]:
        args += ["--set", s]
    if resume:
        args += ["--resume", "auto"]
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.Popen(args, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(cond, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended early ({proc.returncode}): {proc.communicate()[1][-2000:]}")
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _has_checkpoint(run_dir: Path) -> bool:
    return any((run_dir / "checkpoints").glob("step_*.pt"))


def test_a_fresh_run_over_old_checkpoints_is_refused_or_overwritten(tmp_path):
    cfg = _cfg(tmp_path, "train.steps=20", "train.ckpt_every=5", "train.keep_checkpoints=5")
    moldiff.train(cfg, progress=False)
    with pytest.raises(RunFolderError, match="already holds checkpoints.*--resume auto.*--overwrite"):
        moldiff.train(_cfg(tmp_path, "train.steps=5"), progress=False)
    with pytest.raises(moldiff.ConfigError, match="cannot be combined"):
        moldiff.train(cfg, resume="auto", overwrite=True, progress=False)
    res = moldiff.train(_cfg(tmp_path, "train.steps=10", "train.ckpt_every=5", "train.keep_checkpoints=5"),
                        overwrite=True, progress=False)
    # only the new run's checkpoints: no step_15 / step_20 left beside its last.pt
    assert sorted(p.name for p in res.checkpoint.parent.iterdir()) == ["last.pt", "step_00000005.pt", "step_00000010.pt"]
    assert load_checkpoint(res.checkpoint)["step"] == 10


def test_the_lock_is_exclusive_and_released(tmp_path):
    with RunFolder(tmp_path / "run"):
        # flock locks are per open file description: a second one in this process conflicts too
        with pytest.raises(RunFolderError, match=f"pid {os.getpid()}"):
            RunFolder(tmp_path / "run").acquire()
    with RunFolder(tmp_path / "run"):
        pass


def test_same_name_twice_at_once_sigterm_and_resume(tmp_path):
    """A second writer is refused while the first lives; SIGTERM then stops the first between steps with a
    checkpoint, the MLflow run KILLED and a one-line message; a resume continues from that step."""
    run_dir = tmp_path / "runs" / "smoke" / "same"
    sets = ["name=same", "train.steps=100000", "train.ckpt_every=50", "train.batch_size=64"]
    first = _start(tmp_path / "runs", *sets)
    try:
        _wait_for(lambda: _has_checkpoint(run_dir), proc=first)
        second = _start(tmp_path / "runs", *sets)
        out, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        assert f"in use by another training process (pid {first.pid}" in err
        assert first.poll() is None  # the first is untouched
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 128 + signal.SIGTERM, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("moldiff: training stopped by SIGTERM at step "), err
    assert "Traceback" not in err
    step = int(lines[-1].split("at step ")[1].split(";")[0])
    path, state = latest_checkpoint(run_dir / "checkpoints")
    assert state["step"] == step  # the interrupted step was saved
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert [r.info.status for r in runs] == ["KILLED"]
    res = moldiff.train(moldiff.load_config(SMOKE, [f"runs_root={tmp_path / 'runs'}", *FAST, *sets[:1],
                                                    f"train.steps={step + 5}", "train.batch_size=64"]),
                        resume="auto", progress=False)
    assert res.step == step + 5 and res.run_id == runs[0].info.run_id
    assert client.get_run(res.run_id).info.status == "FINISHED"


def test_ctrl_c_is_one_line(tmp_path):
    run_dir = tmp_path / "runs" / "smoke" / "c"
    proc = _start(tmp_path / "runs", "name=c", "train.steps=100000", "train.ckpt_every=20", "tracking.enabled=false")
    try:
        _wait_for(lambda: _has_checkpoint(run_dir), proc=proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err.strip().splitlines()[-1].startswith("moldiff: training stopped by SIGINT")


def test_kill_9_at_any_moment_then_resume_is_exact(tmp_path):
    """kill -9 while checkpoints are written every step; resume reaches the same weights as an uninterrupted run."""
    sets = ["name=k", "train.steps=60", "train.ckpt_every=1", "tracking.enabled=false"]
    run_dir = tmp_path / "runs" / "smoke" / "k"
    proc = _start(tmp_path / "runs", *sets)
    try:
        _wait_for(lambda: len(list((run_dir / "checkpoints").glob("step_*.pt"))) >= 2, proc=proc)
        time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    (run_dir / "checkpoints" / ".last.pt.dead.tmp").write_bytes(b"\x00" * 4096)  # as a kill mid-save leaves
    resumed = _start(tmp_path / "runs", *sets, resume=True)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))
    whole = moldiff.train(_cfg(tmp_path / "whole", *sets[:3]), progress=False)
    a, b = load_checkpoint(run_dir / "checkpoints" / "last.pt"), load_checkpoint(whole.checkpoint)
    assert a["step"] == b["step"] == 60
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_sigterm_under_torchrun_stops_every_rank_at_the_same_step(tmp_path):
    """torchrun (2 CPU processes, gloo) forwards SIGTERM to its workers: the ranks agree on the step to stop
    after (no rank left waiting in an all-reduce), rank 0 saves it, and the MLflow run ends KILLED."""
    root = tmp_path / "runs"
    run_dir = root / "smoke" / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "moldiff",
           "train", str(SMOKE), "--no-progress"]
    for s in [*FAST, f"runs_root={root}", "name=ddp", "train.steps=100000", "train.ckpt_every=25",
              "train.batch_size=64"]:
        cmd += ["--set", s]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _wait_for(lambda: _has_checkpoint(run_dir), timeout=240, proc=proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
    assert proc.returncode != 0
    stops = [ln for ln in err.splitlines() if "training stopped by SIGTERM at step" in ln]
    assert stops, err[-3000:]
    steps = {int(ln.split("at step ")[1].split(";")[0]) for ln in stops}
    assert len(stops) == 2, err[-3000:]  # both ranks stopped by themselves (neither left waiting and killed)
    assert len(steps) == 1, stops  # after the same step
    step = steps.pop()
    _, state = latest_checkpoint(run_dir / "checkpoints")
    assert state["step"] == step
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert [r.info.status for r in runs] == ["KILLED"]
