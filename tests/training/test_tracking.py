"""MLflow tracking in a temporary SQLite store: params, metric histories, figures, artifacts, tags,
re-opened runs, the do-nothing tracker (which must not import MLflow), and a real training run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

import moldiff  # noqa: E402
from moldiff.config import flatten, to_dict, to_yaml  # noqa: E402
from moldiff.training.tracking import (  # noqa: E402
    MLflowTracker,
    NullTracker,
    Tracker,
    default_tracking_uri,
    environment_info,
    make_tracker,
)

pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SMOKE_VP = ROOT / "configs" / "smoke" / "toy2d_vp.yaml"
#: a short but complete run of the VP smoke config: 4 logged training steps, one evaluation sampler
SHORT = ["train.steps=40", "train.log_every=10", "train.ckpt_every=20", "eval.samplers=[ode_heun]",
         "eval.nll_points=0", "eval.n_samples=100", "eval.steps=10"]


@pytest.fixture(scope="module")
def _template_db(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store, created once: building the schema (the migrations) takes seconds."""
    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    assert path.is_file()
    return path


@pytest.fixture
def runs_root(tmp_path, _template_db) -> Path:
    """``tmp_path`` holding a fresh (copied) ``mlflow.db``."""
    shutil.copy(_template_db, tmp_path / "mlflow.db")
    return tmp_path


def _client(root: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")


def _artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    """Every artifact file of a run, recursively."""
    out = set()
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            out |= _artifact_paths(client, run_id, info.path)
        else:
            out.add(info.path)
    return out


def _figure():
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1, 2], [0, 1, 4])
    return fig


# --------------------------------------------------------------------------------------------------
# MLflowTracker
# --------------------------------------------------------------------------------------------------
def test_default_tracking_uri(tmp_path):
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_new_run_and_experiment_layout(runs_root):
    tr = MLflowTracker(runs_root, "exp_a", run_name="first")
    client = _client(runs_root)
    assert tr.uri == f"sqlite:///{runs_root.resolve()}/mlflow.db"
    assert not tr.resumed and tr.run_id
    run = client.get_run(tr.run_id)
    assert run.info.run_name == "first"
    assert run.info.status == "RUNNING"
    exp = client.get_experiment_by_name("exp_a")
    assert exp.experiment_id == tr.experiment_id == run.info.experiment_id
    # an explicit artifact location under the runs root, not ./mlruns
    assert exp.artifact_location == (runs_root.resolve() / "artifacts" / "exp_a").as_uri()
    tr.finish()
    assert client.get_run(tr.run_id).info.status == "FINISHED"
    # a second tracker in the same experiment makes a second run there
    tr2 = MLflowTracker(runs_root, "exp_a", run_name="second")
    assert tr2.run_id != tr.run_id and tr2.experiment_id == tr.experiment_id
    tr2.finish("FAILED")
    assert client.get_run(tr2.run_id).info.status == "FAILED"
    assert not (runs_root / "mlruns").exists()


def test_params_metrics_tags(runs_root):
    tr = MLflowTracker(runs_root, "exp_b", run_name="r")
    tr.log_params({"train.lr": 0.001, "process.kind": "vp", "train.betas": [0.9, 0.999], "process.t_min": None,
                   "long": "x" * 7000})
    many = {f"p{i:03d}": i for i in range(250)}  # more than one batch of 100
    tr.log_params(many)
    losses = [1.0, 0.7, 0.5, 0.45, 0.4, 0.38]
    for i, loss in enumerate(losses):
        tr.log_metrics({"train/loss": loss, "train/lr": 1e-3 * (i + 1)}, step=10 * (i + 1))
    tr.set_tags({"env.torch": "2.x", "resumed_from_step": 0})
    tr.finish()

    client = _client(runs_root)
    data = client.get_run(tr.run_id).data
    assert data.params["train.lr"] == "0.001"
    assert data.params["process.kind"] == "vp"
    assert data.params["train.betas"] == "[0.9, 0.999]"
    assert data.params["process.t_min"] == "None"
    assert len(data.params["long"]) == 6000 and data.params["long"].endswith("...")  # MLflow's limit
    assert all(data.params[k] == str(v) for k, v in many.items())
    hist = client.get_metric_history(tr.run_id, "train/loss")
    assert [m.step for m in hist] == [10, 20, 30, 40, 50, 60]
    assert [m.value for m in hist] == pytest.approx(losses)
    assert [m.value for m in client.get_metric_history(tr.run_id, "train/lr")] == pytest.approx(
        [1e-3 * (i + 1) for i in range(6)])
    assert data.metrics["train/loss"] == pytest.approx(0.38)  # latest value
    assert data.tags["env.torch"] == "2.x"
    assert data.tags["resumed_from_step"] == "0"  # tags are strings


def test_figures_text_and_files(runs_root, tmp_path_factory):
    tr = MLflowTracker(runs_root, "exp_c", run_name="r")
    fig = _figure()
    tr.log_figure(fig, "figures/step_0000010/samples.png")
    plt.close(fig)
    tr.log_text("a: 1\n", "config.yaml")
    src = tmp_path_factory.mktemp("src") / "metrics.json"
    src.write_text('{"w2": 0.5}\n')
    tr.log_artifact(src, "files/step_0000010")
    tr.log_artifact(src)  # at the root
    tr.finish()

    client = _client(runs_root)
    assert _artifact_paths(client, tr.run_id) == {
        "figures/step_0000010/samples.png", "config.yaml", "files/step_0000010/metrics.json", "metrics.json",
    }
    # the files really are under <runs_root>/artifacts/<experiment>/<run_id>/artifacts
    base = runs_root / "artifacts" / "exp_c" / tr.run_id / "artifacts"
    png = base / "figures" / "step_0000010" / "samples.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (base / "config.yaml").read_text() == "a: 1\n"
    assert (base / "files" / "step_0000010" / "metrics.json").read_text() == '{"w2": 0.5}\n'
    assert (base / "metrics.json").is_file()


def test_reopen_continues_the_same_run(runs_root):
    first = MLflowTracker(runs_root, "exp_d", run_name="r")
    first.log_params({"train.steps": 20, "train.lr": 0.001})
    first.log_metrics({"train/loss": 1.0}, 10)
    first.log_metrics({"train/loss": 0.8}, 20)
    first.finish()

    again = MLflowTracker(runs_root, "exp_d", run_name="ignored", run_id=first.run_id)
    assert again.resumed and again.run_id == first.run_id
    client = _client(runs_root)
    assert client.get_run(first.run_id).info.status == "RUNNING"
    # re-logging the config (one value changed, one new) must not fail on the already-logged params
    again.log_params({"train.steps": 40, "train.lr": 0.001, "train.new_key": "x"})
    again.log_metrics({"train/loss": 0.6}, 30)
    again.log_metrics({"train/loss": 0.5}, 40)
    again.finish()

    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.steps"] == "20"  # first value kept
    assert run.data.params["train.new_key"] == "x"
    hist = client.get_metric_history(first.run_id, "train/loss")
    assert [m.step for m in hist] == [10, 20, 30, 40]
    assert [m.value for m in hist] == pytest.approx([1.0, 0.8, 0.6, 0.5])
    exp = client.get_experiment_by_name("exp_d")
    assert len(client.search_runs([exp.experiment_id])) == 1


def test_reopen_unknown_run_starts_a_new_one(runs_root):
    tr = MLflowTracker(runs_root, "exp_e", run_name="r", run_id="0" * 32)
    assert not tr.resumed and tr.run_id != "0" * 32
    assert _client(runs_root).get_run(tr.run_id).info.run_name == "r"
    tr.finish()


def test_explicit_uri(runs_root, _template_db):
    other = runs_root / "elsewhere"
    other.mkdir()
    shutil.copy(_template_db, other / "custom.db")
    uri = f"sqlite:///{other}/custom.db"
    cfg = moldiff.load_config(SMOKE_VP, [f"runs_root={runs_root}", f"tracking.uri={uri}", "tracking.experiment=ex"])
    tr = make_tracker(cfg)
    assert isinstance(tr, MLflowTracker) and tr.uri == uri
    tr.log_metrics({"m": 1.0}, 1)
    tr.finish()
    assert MlflowClient(tracking_uri=uri).get_run(tr.run_id).data.metrics == {"m": 1.0}
    assert _client(runs_root).get_experiment_by_name("ex") is None  # nothing in the default store


def test_make_tracker_enabled(runs_root):
    cfg = moldiff.load_config(SMOKE_VP, [f"runs_root={runs_root}"])
    tr = make_tracker(cfg)
    assert isinstance(tr, MLflowTracker)
    run = _client(runs_root).get_run(tr.run_id)
    assert run.info.run_name == "toy2d_vp"
    assert _client(runs_root).get_experiment(run.info.experiment_id).name == "smoke"
    tr.finish()
    reopened = make_tracker(cfg, run_id=tr.run_id)
    assert reopened.resumed and reopened.run_id == tr.run_id
    reopened.finish()


# --------------------------------------------------------------------------------------------------
# the do-nothing tracker
# --------------------------------------------------------------------------------------------------
def test_make_tracker_disabled_does_nothing(tmp_path):
    cfg = moldiff.load_config(SMOKE_VP, [f"runs_root={tmp_path / 'runs'}", "tracking.enabled=false"])
    tr = make_tracker(cfg, run_id="abc")
    assert type(tr) is NullTracker is Tracker
    assert not isinstance(tr, MLflowTracker)
    assert tr.run_id is None
    fig = _figure()
    src = tmp_path / "f.txt"
    src.write_text("x")
    assert tr.log_params({"a": 1}) is None
    assert tr.log_metrics({"a": 1.0}, 1) is None
    assert tr.log_figure(fig, "f.png") is None
    assert tr.log_artifact(src, "x") is None
    assert tr.log_text("t", "t.txt") is None
    assert tr.set_tags({"a": 1}) is None
    assert tr.finish("FAILED") is None
    plt.close(fig)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]  # no store, no runs folder


def test_disabled_tracking_never_imports_mlflow(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        import moldiff
        from moldiff.training.tracking import make_tracker
        assert "mlflow" not in sys.modules, "importing moldiff imports mlflow"
        cfg = moldiff.load_config({str(SMOKE_VP)!r}, ["runs_root={tmp_path / 'runs'}", "tracking.enabled=false",
                                                      "train.steps=5", "eval.samplers=[ode_heun]",
                                                      "eval.nll_points=0", "eval.n_samples=50", "eval.steps=5"])
        make_tracker(cfg).finish()
        res = moldiff.train(cfg, progress=False)
        assert res.run_id is None, res.run_id
        assert res.checkpoint.is_file(), res.checkpoint
        assert "w2/ode_heun" in res.metrics, res.metrics
        loaded = sorted(m for m in sys.modules if m == "mlflow" or m.startswith("mlflow."))
        assert not loaded, loaded[:5]
        print("NO_MLFLOW_OK")
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "NO_MLFLOW_OK" in out.stdout
    assert not (tmp_path / "runs" / "mlflow.db").exists()
    assert not (tmp_path / "runs" / "artifacts").exists()
    assert not (tmp_path / "mlruns").exists()


# --------------------------------------------------------------------------------------------------
# a real training run
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory, _template_db):
    """The VP smoke config trained briefly with MLflow on, in a temporary runs root."""
    root = tmp_path_factory.mktemp("tracked_run")
    shutil.copy(_template_db, root / "mlflow.db")
    cfg = moldiff.load_config(SMOKE_VP, [f"runs_root={root}", *SHORT])
    res = moldiff.train(cfg, progress=False)
    return root, cfg, res


def test_training_run_params_and_metrics(trained):
    root, cfg, res = trained
    assert res.run_id and res.step == 40
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    run = client.get_run(res.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "toy2d_vp"
    assert client.get_experiment(run.info.experiment_id).name == "smoke"
    params = run.data.params
    assert params["train.lr"] == "0.002"
    assert params["process.kind"] == "vp"
    assert params["train.steps"] == "40"
    assert params["eval.samplers"] == "['ode_heun']"
    assert params["task"] == "toy2d"
    assert set(params) == set(flatten(to_dict(cfg)))

    hist = client.get_metric_history(res.run_id, "train/loss")
    assert [m.step for m in hist] == [10, 20, 30, 40]
    assert all(0 < m.value < 10 for m in hist)
    lr = client.get_metric_history(res.run_id, "train/lr")
    assert [m.step for m in lr] == [10, 20, 30, 40] and all(m.value == pytest.approx(0.002) for m in lr)
    nonfinite = client.get_metric_history(res.run_id, "train/nonfinite_steps")
    assert [m.value for m in nonfinite] == [0.0] * 4

    metrics = run.data.metrics
    for key in ("w2/ode_heun", "w2/noise_floor", "nfe/ode_heun"):
        assert key in metrics, sorted(metrics)
        assert metrics[key] == pytest.approx(res.metrics[key])
    eval_hist = client.get_metric_history(res.run_id, "w2/ode_heun")
    assert [m.step for m in eval_hist] == [40]


def test_training_run_artifacts(trained):
    root, cfg, res = trained
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    paths = _artifact_paths(client, res.run_id)
    assert "config.yaml" in paths
    assert "figures/step_0000040/samples.png" in paths
    assert "checkpoints/last.pt" in paths
    base = root / "artifacts" / "smoke" / res.run_id / "artifacts"
    # the logged config is the resolved config
    assert (base / "config.yaml").read_text() == to_yaml(cfg)
    assert (base / "figures" / "step_0000040" / "samples.png").read_bytes()[:4] == b"\x89PNG"
    # the logged checkpoint is the run's final checkpoint
    assert (base / "checkpoints" / "last.pt").read_bytes() == res.checkpoint.read_bytes()
    assert res.checkpoint == root / "smoke" / "toy2d_vp" / "checkpoints" / "last.pt"


def test_training_run_environment_tags(trained):
    root, cfg, res = trained
    tags = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db").get_run(res.run_id).data.tags
    import torch

    assert tags["env.torch"] == torch.__version__
    assert tags["env.device"] == "cpu" or tags["env.device"].startswith("cuda")
    commit = tags["env.git_commit"]
    assert commit == "unknown" or len(commit.removesuffix("-dirty")) == 40
    assert tags["env.world_size"] == "1"
    assert tags["task"] == "toy2d"
    assert tags["resumed_from_step"] == "0"
    assert set(environment_info(torch.device("cpu"))) <= set(tags)


def test_resumed_training_continues_the_mlflow_run(runs_root):
    fast = [f"runs_root={runs_root}", *SHORT, "train.steps=20", "train.ckpt_every=20", "eval.n_samples=50"]
    first = moldiff.train(moldiff.load_config(SMOKE_VP, fast), progress=False)
    second = moldiff.train(moldiff.load_config(SMOKE_VP, [*fast, "train.steps=40"]), resume="auto", progress=False)
    assert second.step == 40
    assert second.run_id == first.run_id
    client = _client(runs_root)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["resumed_from_step"] == "20"
    assert run.data.params["train.steps"] == "20"  # params of the first launch are kept
    assert [m.step for m in client.get_metric_history(first.run_id, "train/loss")] == [10, 20, 30, 40]
    assert [m.step for m in client.get_metric_history(first.run_id, "w2/ode_heun")] == [20, 40]
    assert len(client.search_runs([run.info.experiment_id])) == 1


# --------------------------------------------------------------------------------------------------
# concurrency, locked and unreachable stores, resume after a kill
# --------------------------------------------------------------------------------------------------
def test_two_first_runs_at_once_share_a_new_store(tmp_path):
    """Two processes create the same (absent) SQLite store at once: both runs finish (the schema is built once,
    under a file lock)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    procs = [
        subprocess.Popen([sys.executable, "-m", "moldiff", "train", str(SMOKE_VP), "--no-progress",
                          "--set", f"runs_root={tmp_path}", "--set", f"name={name}", "--set", "train.steps=5",
                          "--set", "eval.samplers=[]", "--set", "eval.nll_points=0", "--set", "eval.n_samples=50"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in ("A", "B", "C")
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-1500:] for o in outs]
    client = _client(tmp_path)
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["A", "B", "C"]
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_a_store_locked_by_another_process_is_waited_for_then_a_clear_error(runs_root):
    import sqlite3
    import time

    from moldiff.training.tracking import TrackingError

    cfg = moldiff.load_config(SMOKE_VP, [f"runs_root={runs_root}", *SHORT, "train.steps=2", "tracking.timeout=1.5"])
    holder = sqlite3.connect(runs_root / "mlflow.db", timeout=0.1)
    holder.execute("BEGIN EXCLUSIVE")
    t0 = time.monotonic()
    try:
        with pytest.raises(TrackingError, match="locked by another process for 1.5 s"):
            moldiff.train(cfg, progress=False)
    finally:
        holder.rollback()
        holder.close()
    assert time.monotonic() - t0 < 30
    client = _client(runs_root)
    assert not [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
                if r.info.status == "RUNNING"]
    # once released, the same command works
    assert moldiff.train(cfg, overwrite=True, progress=False).step == 2


def test_an_unreachable_server_fails_fast(tmp_path, monkeypatch):
    import time

    from moldiff.training.tracking import TrackingError

    for var in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.delenv(var, raising=False)
    cfg = moldiff.load_config(SMOKE_VP, [f"runs_root={tmp_path}", *SHORT, "train.steps=2",
                                         "tracking.uri=http://127.0.0.1:9", "tracking.timeout=5"])
    t0 = time.monotonic()
    with pytest.raises(TrackingError, match="127.0.0.1:9"):
        moldiff.train(cfg, progress=False)
    assert time.monotonic() - t0 < 60


def test_metric_steps_logged_before_a_kill_are_not_logged_twice(runs_root):
    """Steps 11-12 were logged, then the process died with its newest checkpoint at 10: the resumed run
    recomputes them (bit-exactly) but the store holds each step once."""
    fast = [f"runs_root={runs_root}", *SHORT, "train.steps=12", "train.ckpt_every=5", "train.log_every=1",
            "eval.samplers=[]", "train.keep_checkpoints=5"]
    first = moldiff.train(moldiff.load_config(SMOKE_VP, fast), progress=False)
    ckpts = first.checkpoint.parent
    (ckpts / "last.pt").unlink()
    (ckpts / "step_00000012.pt").unlink()
    second = moldiff.train(moldiff.load_config(SMOKE_VP, fast), resume="auto", progress=False)
    assert second.run_id == first.run_id
    steps = [m.step for m in _client(runs_root).get_metric_history(first.run_id, "train/loss")]
    assert sorted(steps) == list(range(1, 13))


def test_resume_changes_are_applied_and_recorded(runs_root):
    fast = [f"runs_root={runs_root}", *SHORT, "train.steps=10", "train.ckpt_every=10", "train.log_every=5",
            "eval.samplers=[]"]
    first = moldiff.train(moldiff.load_config(SMOKE_VP, fast), progress=False)
    second = moldiff.train(moldiff.load_config(SMOKE_VP, [*fast, "train.steps=20", "train.lr=5e-5"]), resume="auto",
                           progress=False)
    client = _client(runs_root)
    lrs = {m.step: m.value for m in client.get_metric_history(first.run_id, "train/lr")}
    assert lrs[10] == pytest.approx(2e-3) and lrs[15] == pytest.approx(5e-5) and lrs[20] == pytest.approx(5e-5)
    tags = client.get_run(second.run_id).data.tags
    assert "train.lr: 0.002 -> 5e-05" in tags["resume.step_00000010.changes"]
    assert "train.steps: 10 -> 20" in tags["resume.step_00000010.changes"]
    arts = _artifact_paths(client, first.run_id)
    assert {"config.yaml", "config_resumed_at_step_00000010.yaml"} <= arts
