"""The trajectory task end to end on the Lorenz-63 smoke set: training, assimilation by every method, the
``assimilate`` CLI with its error paths, and config checks that name the key."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import moldiff
from moldiff.cli import main
from moldiff.config import ConfigError
from moldiff.loading import load_config
from physics.fields.api import assimilate

SMOKE = "configs/smoke/trajectory_lorenz63.yaml"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cfg = load_config(SMOKE, [f"runs_root={root}", "tracking.enabled=false", "train.steps=60", "eval.n_trajectories=0"])
    return moldiff.train(cfg, progress=False).checkpoint


def test_assimilate_api_shapes_and_every_method(checkpoint):
    task, model = moldiff.load_model(checkpoint, overrides=["sampler.steps=6"])
    truth = task.trajectories("test")[:2, :20]
    y = task.observe(truth.double(), torch.Generator().manual_seed(0)).float()
    assert y.shape == (2, task.operator.num_observations(20)) == (2, 4 * 3)
    for method in ("sda", "mmps", "dps"):
        post = task.assimilate(model, y, n=3, length=20, method=method, generator=torch.Generator().manual_seed(1),
                               progress=False)
        assert post.shape == (2, 3, 20, 3) and torch.isfinite(post).all()
    # the weak-constraint dynamics term: the likelihood gains the 19 x 3 one-step residuals
    task.cfg.eval.dynamics_std = 0.1
    obs = task.observation_model(y, 20)
    assert obs.y.shape == (2, 12 + 19 * 3)
    truth_z = task.normalize(truth.double()).float()
    res = obs.residual(truth_z)[:, 12:]  # whitened: the truth follows the dynamics up to float32 storage
    assert res.abs().max() < 1e-2
    for method in ("sda", "mmps"):
        post = task.assimilate(model, y, n=2, length=20, method=method, generator=torch.Generator().manual_seed(1),
                               progress=False)
        assert post.shape == (2, 2, 20, 3) and torch.isfinite(post).all()
    task.cfg.eval.dynamics_std = 0.0
    # nonlinear observations: SDA differentiates through arctan, the ETKF linearises it through its ensemble
    arctan = moldiff.load_model(checkpoint, overrides=["sampler.steps=6", "observation.transform=arctan",
                                                       "observation.noise_std=0.1", "eval.methods=[sda,etkf]"])[0]
    ya = arctan.observe(truth.double(), torch.Generator().manual_seed(0)).float()
    assert ya.abs().max() < torch.pi / 2 + 1
    post = arctan.assimilate(model, ya, n=2, length=20, generator=torch.Generator().manual_seed(1), progress=False)
    ens = arctan.run_filter(ya.double(), 20, "etkf", torch.Generator().manual_seed(2))
    assert torch.isfinite(post).all() and torch.isfinite(ens).all()
    ens = task.run_filter(y.double(), 20, "etkf", torch.Generator().manual_seed(2))
    assert ens.shape == (2, task.cfg.eval.ensemble, 20, 3)
    with pytest.raises(ValueError, match="shape"):
        task.assimilate(model, y[:, :5], n=2, length=20, generator=torch.Generator())
    with pytest.raises(ValueError, match="NaN"):
        task.assimilate(model, torch.full_like(y, float("nan")), n=2, length=20, generator=torch.Generator())
    with pytest.raises(ValueError, match="method"):
        task.assimilate(model, y, n=2, length=20, method="enkf", generator=torch.Generator())


def test_assimilate_cli_and_bad_inputs(checkpoint, tmp_path, capsys, monkeypatch):
    task, _ = moldiff.load_model(checkpoint)
    truth = task.trajectories("test")[:1, :15]
    obs = tmp_path / "obs.npz"
    np.savez(obs, y=task.observe(truth.double(), torch.Generator().manual_seed(0)).numpy(), length=15)
    out = tmp_path / "post.npz"
    rc = main(["assimilate", str(checkpoint), "--observations", str(obs), "--out", str(out), "-n", "2",
               "--no-progress", "--set", "sampler.steps=4"])
    assert rc == 0, capsys.readouterr().err
    with np.load(out) as z:
        assert z["samples"].shape == (1, 2, 15, 3)
    capsys.readouterr()
    bad = tmp_path / "bad.npz"
    np.savez(bad, y=np.full((1, 9), np.nan))
    cases = [
        (tmp_path / "missing.npz", "not found"),
        (bad, "NaN"),
    ]
    np.savez(tmp_path / "noy.npz", z=np.zeros(3))
    cases.append((tmp_path / "noy.npz", "no array 'y'"))
    np.save(tmp_path / "plain.npy", np.zeros((1, 9)))
    cases.append((tmp_path / "plain.npy", "an .npz file"))
    (tmp_path / "junk.npz").write_text("not a zip")
    cases.append((tmp_path / "junk.npz", "not an .npz archive"))
    np.savez(tmp_path / "veclen.npz", y=np.zeros((1, 9)), length=np.array([15, 15]))
    cases.append((tmp_path / "veclen.npz", "'length' must be one positive integer"))
    np.savez(tmp_path / "empty.npz", y=np.zeros((0, 9)))
    cases.append((tmp_path / "empty.npz", "no trajectories"))
    for path, needle in cases:
        dest = tmp_path / f"out_{path.stem}.npz"
        rc = main(["assimilate", str(checkpoint), "--observations", str(path), "--out", str(dest), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and needle in err, (needle, err)
        assert not dest.exists()
    # observations far outside the data: refused before sampling, naming the scale (exit 2), nothing written
    huge = tmp_path / "huge.npz"
    np.savez(huge, y=np.full((1, 9), 1e20), length=15)
    dest = tmp_path / "huge_post.npy"
    rc = main(["assimilate", str(checkpoint), "--observations", str(huge), "--out", str(dest), "-n", "2",
               "--no-progress", "--set", "sampler.steps=4"])
    err = capsys.readouterr().err
    assert rc == 2 and "standard deviations of the training data" in err, err
    assert not dest.exists() and not list(tmp_path.glob(".huge_post*"))
    # without that check, the posterior is not finite: the guard behind it still exits 3 and writes nothing
    from physics.fields.task import TrajectoryTask

    monkeypatch.setattr(TrajectoryTask, "OBSERVATION_SCALE_LIMITS", (float("inf"), float("inf")))
    rc = main(["assimilate", str(checkpoint), "--observations", str(huge), "--out", str(dest), "-n", "2",
               "--no-progress", "--set", "sampler.steps=4"])
    err = capsys.readouterr().err
    assert rc == 3 and "posterior is not finite" in err, err
    assert not dest.exists() and not list(tmp_path.glob(".huge_post*"))
    # an output path that is a folder is refused before any work
    rc = main(["assimilate", str(checkpoint), "--observations", str(obs), "--out", str(tmp_path), "--no-progress"])
    assert rc == 2 and "is a folder" in capsys.readouterr().err
    # observations that do not fit the operator (wrong length) are named as such
    rc = main(["assimilate", str(checkpoint), "--observations", str(obs), "--out", str(tmp_path / "x.npz"),
               "--length", "30", "--no-progress"])
    assert rc == 2 and "shape" in capsys.readouterr().err


@pytest.mark.parametrize("override,key", [
    ("model.backbone=unet", "model.backbone"),
    ("data.system=kolmogorov", "model.backbone"),
    ("observation.kind=blur", "observation.kind"),
    ("observation.kind=coarsen", None),
    ("observation.noise_std=0", "observation.noise_std"),
    ("eval.methods=[sda,kalman]", "eval.methods"),
    ("eval.length=3", "eval.length"),
    ("data.size=big", "data.size"),
    ("observation.transform=square", "observation"),
    ("observation.transform=arctan", "eval.methods"),  # the smoke config's methods include the linear EnKF
    ("eval.dynamics_forcing=7", "eval.dynamics_forcing"),  # Lorenz-63 has no forcing
])
def test_config_errors_name_the_key(override, key):
    extra = ["observation.factor=2"] if override == "observation.kind=coarsen" else []
    with pytest.raises(ConfigError) as e:
        load_config(SMOKE, [override, *extra])
    assert (key or "observation") in str(e.value)


def test_the_stochastic_enkf_is_for_lorenz_systems():
    with pytest.raises(ConfigError, match="eval.methods.*fields take etkf"):
        load_config("configs/smoke/trajectory_kolmogorov.yaml", ["eval.methods=[sda,enkf]"])


def test_letkf_tracks_a_kolmogorov_trajectory_from_dense_low_noise_observations(tmp_path):
    # the textbook case: every pixel of every state observed with noise 0.05 (vorticity rms ~6); the localised ETKF
    # (8 members, so a radius of 1 grid step: fewer local observations than members) with the spectral simulator
    # as its model locks on from climatology and ends below the observation noise
    from physics.fields.task import TrajectoryTask

    noise = 0.05
    cfg = load_config("configs/smoke/trajectory_kolmogorov.yaml",
                      ["observation.kind=full", "observation.every=1", f"observation.noise_std={noise}",
                       "eval.methods=[etkf]", "eval.ensemble=8", "eval.localization=1", "eval.inflation=1.05"])
    task = TrajectoryTask(cfg)
    truth = task.trajectories("test")[:1, :8].double()
    y = task.observe(truth, torch.Generator().manual_seed(0)).float()
    ens = task.run_filter(y, 8, "etkf", torch.Generator().manual_seed(1))
    assert ens.shape == (1, 8, 8, 32, 32) and torch.isfinite(ens).all()
    rmse = (ens.mean(1) - truth).square().mean((0, 2, 3)).sqrt()  # per state
    climatology = float((truth - task.stats[0]).square().mean().sqrt())
    assert float(rmse[0]) < 0.1 * climatology, (rmse, climatology)
    assert (rmse.diff() < 0).all() and float(rmse[4:].max()) < 2 * noise and float(rmse[-1]) < noise, rmse
    # the smoother on the same filter: the last state is the filter's, the first is corrected by all that follow
    smooth = task.run_filter(y, 8, "enks", torch.Generator().manual_seed(1))
    rmse_s = (smooth.mean(1) - truth).square().mean((0, 2, 3)).sqrt()
    torch.testing.assert_close(rmse_s[-1], rmse[-1], rtol=1e-5, atol=0)
    assert (rmse_s[:-1] < 0.95 * rmse[:-1]).all(), (rmse_s, rmse)  # every earlier state gains from later data


def test_other_tasks_do_not_assimilate(tmp_path):
    cfg = load_config("configs/smoke/toy2d_vp.yaml", [f"runs_root={tmp_path}", "tracking.enabled=false",
                                                        "train.steps=2", "eval.samplers=[ode_euler]",
                                                        "eval.nll_points=0", "eval.n_samples=10"])
    ckpt = moldiff.train(cfg, progress=False).checkpoint
    with pytest.raises(ConfigError, match="does not assimilate"):
        assimilate(ckpt, torch.zeros(1, 2), n=1, length=4)


def test_the_weak_constraint_term_can_be_given_a_wrong_model():
    """``eval.dynamics_forcing``: the model term integrates Lorenz-96 with that forcing (model error), so a true
    (F = 8) trajectory leaves one-step residuals of about ``(8 - 7) * dt`` per variable, the true model none."""
    from moldiff.tasks import get_task

    def residual(*extra):
        cfg = load_config("configs/smoke/trajectory_lorenz96.yaml", ["tracking.enabled=false", "eval.dynamics_std=0.1",
                                                                     *extra])
        task = get_task("trajectory")(cfg)
        truth = task.trajectories("test")[:1, :6].double()
        y = task.observe(truth, torch.Generator().manual_seed(0))
        obs = task.observation_model(y, 6)
        p = y.shape[1]
        return (obs.residual(task.normalize(truth))[:, p:] * 0.1).abs().mean()  # back to physical units

    assert residual() < 1e-4
    assert 0.02 < residual("eval.dynamics_forcing=7") < 0.08  # ~ 1 x 0.05 MTU between states


@pytest.mark.parametrize("shape, theirs", [((1, 3 * 64), "they hold 3 observed states of 64 values"),
                                           ((1, 4 * 63), "252 is no multiple of 64: observations of another grid"),
                                           ((1, 4, 64), "they are 3-dimensional")])
def test_observations_of_another_grid_or_time_axis_name_both_shapes(shape, theirs):
    from physics.fields.task import TrajectoryTask

    task = TrajectoryTask(load_config("configs/smoke/trajectory_kolmogorov.yaml"))  # 4 x 4 blocks of 32 x 32, 1 in 2
    expected = (rf"observations of shape \[{', '.join(map(str, shape))}\] do not fit this prior: it observes 4 x 4 block "
                rf"means of the 32 x 32 state \(8 x 8 = 64 values\) at 4 of 8 states \(one in 2 from state 0\): "
                rf"\[B, 4 x 64 = 256\]; {theirs}")
    with pytest.raises(ValueError, match=expected):
        task.assimilate(None, torch.zeros(shape), n=1, length=8, generator=torch.Generator())
