"""Experiment tracking.  :class:`MLflowTracker` writes to an SQLite store under the runs root
(``runs/mlflow.db`` by default, artifacts under ``runs/artifacts/<experiment>``); :class:`NullTracker`
does nothing and never imports MLflow.  Browse with ``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..fileio import lock_file

__all__ = ["Tracker", "NullTracker", "MLflowTracker", "TrackingError", "make_tracker", "environment_info", "default_tracking_uri"]


class Tracker:
    """Interface; also the do-nothing tracker."""

    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_figure(self, figure: Any, artifact_file: str) -> None: ...

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None: ...

    def log_text(self, text: str, artifact_file: str) -> None: ...

    def set_tags(self, tags: dict[str, Any]) -> None: ...

    def finish(self, status: str = "FINISHED") -> None: ...


NullTracker = Tracker


def default_tracking_uri(runs_root: str | Path) -> str:
    return f"sqlite:///{Path(runs_root).resolve() / 'mlflow.db'}"


class TrackingError(RuntimeError):
    """The tracking store cannot be used: locked past the timeout, unreachable, or refusing a write."""


def _is_locked(e: BaseException) -> bool:
    return "database is locked" in str(e) or "database table is locked" in str(e)


@contextlib.contextmanager
def _store_lock(uri: str, timeout: float) -> Iterator[None]:
    """An exclusive lock beside a local SQLite store while it may be created (its schema migrations are not
    safe to run twice at once); a no-op for other stores."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    fd = lock_file(f"{db}.lock", timeout)
    if fd is None:
        raise TrackingError(f"{db}: another process kept the MLflow store locked for more than {timeout:g} s "
                            "(tracking.timeout)")
    try:
        yield
    finally:
        os.close(fd)  # releases the lock


class MLflowTracker(Tracker):
    """One MLflow run (created, or re-opened when ``run_id`` is given, e.g. on resume).

    Args:
        runs_root: folder holding ``mlflow.db`` and ``artifacts/``.
        experiment: experiment name; created with an explicit artifact location if new.
        run_name: display name of a new run.
        uri: tracking URI (default ``sqlite:///<runs_root>/mlflow.db``).
        run_id: re-open this run instead of creating one.
        timeout: seconds to wait for a store another process holds locked (SQLite), or for a tracking server to
            answer (HTTP), before a :class:`TrackingError`.

    A new SQLite store is created under a file lock, so concurrent first runs do not race on its schema.  On
    resume, metric steps the run already holds (logged after its last checkpoint, before a kill) are not
    logged again.
    """

    def __init__(
        self,
        runs_root: str | Path,
        experiment: str,
        run_name: str | None = None,
        uri: str | None = None,
        run_id: str | None = None,
        timeout: float = 30.0,
    ):
        root = Path(runs_root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        self.uri = uri or default_tracking_uri(root)
        self.timeout = timeout
        self.run_id = None
        self.resumed = False
        self._logged_until: dict[str, int] = {}
        if self.uri.startswith(("http://", "https://")):
            # MLflow's defaults retry for minutes; three tries (waits 1 s, 2 s) of timeout/3 s each stay within
            # about the timeout and still ride out a blip.  Variables the user set win.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, int(timeout / 3))))
        with _store_lock(self.uri, timeout):
            self._open(root, experiment, run_name, run_id)

    def _open(self, root: Path, experiment: str, run_name: str | None, run_id: str | None) -> None:
        from mlflow.tracking import MlflowClient

        self.client = self._call(MlflowClient, tracking_uri=self.uri)
        exp = self._call(self.client.get_experiment_by_name, experiment)
        if exp is None:
            location = (root / "artifacts" / experiment).as_uri()
            exp_id = self._call(self.client.create_experiment, experiment, artifact_location=location)
        else:
            exp_id = exp.experiment_id
        self.experiment_id = exp_id
        if run_id is not None:
            try:
                run = self._call(self.client.get_run, run_id)
            except TrackingError as e:
                if "RESOURCE_DOES_NOT_EXIST" not in str(e) and "not found" not in str(e).lower():
                    raise
                run = None  # the store was moved or replaced: start a new run
            if run is not None:
                self._call(self.client.update_run, run_id, status="RUNNING")
                self.run_id, self.resumed = run_id, True
                for key in run.data.metrics:
                    history = self._call(self.client.get_metric_history, run_id, key)
                    self._logged_until[key] = max((m.step for m in history), default=-1)
        if self.run_id is None:
            self.run_id = self._call(self.client.create_run, exp_id, run_name=run_name).info.run_id

    def _call(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)``, retried while the store is locked (up to ``timeout`` seconds); any failure
        becomes a :class:`TrackingError` naming the store."""
        deadline = time.monotonic() + self.timeout
        delay = 0.1
        while True:
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - MLflow wraps store errors in several types
                if _is_locked(e) and time.monotonic() + delay < deadline:
                    time.sleep(delay)
                    delay = min(2 * delay, 2.0)
                    continue
                if _is_locked(e):
                    raise TrackingError(f"MLflow store {self.uri} stayed locked by another process for "
                                        f"{self.timeout:g} s (tracking.timeout)") from e
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise TrackingError(f"MLflow store {self.uri}: {first}") from e

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self._call(self.client.get_run, self.run_id).data.params if self.resumed else {}
        items = [Param(k, _param_str(v)) for k, v in params.items() if k not in existing]
        for i in range(0, len(items), 100):
            self._call(self.client.log_batch, self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, int(step)) for k, v in metrics.items()
                 if int(step) > self._logged_until.get(k, -1)]
        for i in range(0, len(items), 500):
            self._call(self.client.log_batch, self.run_id, metrics=items[i : i + 500])

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self._call(self.client.log_figure, self.run_id, figure, artifact_file)

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        self._call(self.client.log_artifact, self.run_id, str(local_path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._call(self.client.log_text, self.run_id, text, artifact_file)

    def set_tags(self, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self._call(self.client.set_tag, self.run_id, k, str(v))

    def finish(self, status: str = "FINISHED") -> None:
        self._call(self.client.set_terminated, self.run_id, status=status)


def _param_str(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 6000 else s[:5997] + "..."


def make_tracker(cfg, run_id: str | None = None) -> Tracker:
    """The tracker a config asks for (MLflow, or nothing when ``tracking.enabled`` is false)."""
    if not cfg.tracking.enabled:
        return NullTracker()
    return MLflowTracker(cfg.runs_root, cfg.tracking.experiment, cfg.name or cfg.task, cfg.tracking.uri, run_id,
                         timeout=cfg.tracking.timeout)


def _git_commit() -> str:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment_info(device: torch.device, world_size: int = 1) -> dict[str, str]:
    """Tags describing where a run ran."""
    info = {
        "env.device": str(device),
        "env.device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "env.torch": torch.__version__,
        "env.cuda": str(torch.version.cuda),
        "env.python": sys.version.split()[0],
        "env.host": socket.gethostname(),
        "env.world_size": str(world_size),
        "env.git_commit": _git_commit(),
    }
    return info
