"""Experiment tracking.  :class:`MLflowTracker` writes to an SQLite store under the runs root
(``runs/mlflow.db`` by default, artifacts under ``runs/artifacts/<experiment>``); :class:`NullTracker`
does nothing and never imports MLflow.  Browse with ``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db``.
"""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

__all__ = ["Tracker", "NullTracker", "MLflowTracker", "make_tracker", "environment_info", "default_tracking_uri"]


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


class MLflowTracker(Tracker):
    """One MLflow run (created, or re-opened when ``run_id`` is given, e.g. on resume).

    Args:
        runs_root: folder holding ``mlflow.db`` and ``artifacts/``.
        experiment: experiment name; created with an explicit artifact location if new.
        run_name: display name of a new run.
        uri: tracking URI (default ``sqlite:///<runs_root>/mlflow.db``).
        run_id: re-open this run instead of creating one.
    """

    def __init__(
        self,
        runs_root: str | Path,
        experiment: str,
        run_name: str | None = None,
        uri: str | None = None,
        run_id: str | None = None,
    ):
        from mlflow.tracking import MlflowClient

        root = Path(runs_root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        self.uri = uri or default_tracking_uri(root)
        self.client = MlflowClient(tracking_uri=self.uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            location = (root / "artifacts" / experiment).as_uri()
            exp_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            exp_id = exp.experiment_id
        self.experiment_id = exp_id
        self.resumed = False
        if run_id is not None:
            try:
                self.client.get_run(run_id)
                self.client.update_run(run_id, status="RUNNING")
                self.run_id = run_id
                self.resumed = True
            except Exception:  # noqa: BLE001 - the store may have been moved: start a new run
                run_id = None
        if run_id is None:
            self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params if self.resumed else {}
        items = [Param(k, _param_str(v)) for k, v in params.items() if k not in existing]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, int(step)) for k, v in metrics.items()]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i : i + 500])

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file)

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(local_path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def set_tags(self, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def _param_str(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 6000 else s[:5997] + "..."


def make_tracker(cfg, run_id: str | None = None) -> Tracker:
    """The tracker a config asks for (MLflow, or nothing when ``tracking.enabled`` is false)."""
    if not cfg.tracking.enabled:
        return NullTracker()
    return MLflowTracker(cfg.runs_root, cfg.tracking.experiment, cfg.name or cfg.task, cfg.tracking.uri, run_id)


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
