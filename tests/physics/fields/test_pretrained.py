"""The shipped Lorenz trajectory priors: they load offline with strict keys, and assimilate a short window from
an observations file through the API and the CLI (few sampler steps: a pipeline check, not a score)."""

import numpy as np
import pytest
import torch

import moldiff
from moldiff.cli import main


@pytest.mark.parametrize("name, dim", [("lorenz63", 3), ("lorenz96", 40)])
def test_a_shipped_prior_assimilates_a_short_window(name, dim, tmp_path, capsys):
    p = moldiff.pretrained(name, device="cpu")
    assert p.task.name == "trajectory" and p.task.shape == (dim,)
    truth = p.task.trajectories("test", progress=False)[:1, :16]
    y = p.task.observe(truth.double(), torch.Generator().manual_seed(0))
    obs = tmp_path / "obs.npz"
    np.savez(obs, y=y.numpy(), length=16)
    out = tmp_path / "post.npz"
    rc = main(["assimilate", "--pretrained", name, "--observations", str(obs), "--out", str(out), "-n", "2",
               "--no-progress", "--set", "sampler.steps=8"])
    assert rc == 0, capsys.readouterr().err
    with np.load(out) as z:
        assert z["samples"].shape == (1, 2, 16, dim) and np.isfinite(z["samples"]).all()
    # what the weights mean cannot be overridden; the operator and the sampler can
    rc = main(["assimilate", "--pretrained", name, "--observations", str(obs), "--out", str(tmp_path / "x.npz"),
               "--set", "model.options.width=8"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot resume with a different model.options" in err and "'width': 8" in err


def test_the_shipped_kolmogorov_prior_assimilates_a_tiny_case_from_its_own_file(tmp_path, capsys, monkeypatch):
    # no dataset and no autoencoder file: the shipped file carries the autoencoder and both normalisations
    monkeypatch.setattr("physics.fields.datasets.load_trajectories", lambda *a, **k: pytest.fail("read a dataset"))
    p = moldiff.pretrained("kolmogorov", device="cpu")
    assert p.task.name == "latent_trajectory" and p.task.shape == (64, 64) and p.task.model_shape == (16, 8, 8)
    from physics.fields.datasets import simulator

    sim, g = simulator(p.task.spec), torch.Generator().manual_seed(0)
    truth = sim.trajectory(sim.advance(sim.random_initial(1, g, dtype=torch.float64), 2.0), 5, p.task.spec.interval)
    obs = tmp_path / "obs.npz"
    np.savez(obs, y=p.task.observe(truth, g).numpy(), length=5)
    out = tmp_path / "post.npz"
    rc = main(["assimilate", "--pretrained", "kolmogorov", "--observations", str(obs), "--out", str(out), "-n", "2",
               "--no-progress", "--set", "sampler.steps=2"])
    assert rc == 0, capsys.readouterr().err
    with np.load(out) as z:
        assert z["samples"].shape == (1, 2, 5, 64, 64) and np.isfinite(z["samples"]).all()
    # observations of another grid: exit 2 naming the prior's operator and the file's shape, nothing written
    np.savez(obs, y=np.zeros((1, 2 * 64)), length=5)
    rc = main(["assimilate", "--pretrained", "kolmogorov", "--observations", str(obs), "--out", str(tmp_path / "x.npz")])
    err = capsys.readouterr().err
    assert rc == 2 and "4 x 4 block means of the 64 x 64 state (16 x 16 = 256 values)" in err and "[1, 128]" in err
    assert not (tmp_path / "x.npz").exists()


def _obs(tmp_path, value, length=20, P=12, name="obs.npz"):
    path = tmp_path / name
    kw = {"length": length} if length else {}
    np.savez(path, y=np.full((1, P), value, np.float32), **kw)
    return path


@pytest.mark.parametrize("value", [1e20, 1e6])
def test_observations_far_outside_the_prior_are_an_error_naming_the_scale(tmp_path, capsys, value):
    out = tmp_path / "post.npz"
    rc = main(["assimilate", "--pretrained", "lorenz63", "--observations", str(_obs(tmp_path, value)), "--out", str(out),
               "-n", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "standard deviations of the training data" in err and "Traceback" not in err
    assert not out.exists()


def test_observations_somewhat_outside_the_prior_get_a_warning(tmp_path, capsys):
    out = tmp_path / "post.npz"
    with pytest.warns(UserWarning, match=r"observations range over \[100, 100\], up to .* standard deviations"):
        rc = main(["assimilate", "--pretrained", "lorenz63", "--observations", str(_obs(tmp_path, 100.0)), "--out",
                   str(out), "-n", "1", "--no-progress", "--set", "sampler.steps=4"])
    assert rc == 0 and out.is_file()


def test_diverging_dynamics_exit_2_without_a_traceback(tmp_path, capsys, monkeypatch):
    from physics.fields.task import TrajectoryTask

    def diverge(self, *a, **k):
        raise FloatingPointError("lorenz63: the state diverged (non-finite values) within 0.05 MTU")

    monkeypatch.setattr(TrajectoryTask, "assimilate", diverge)
    rc = main(["assimilate", "--pretrained", "lorenz63", "--observations", str(_obs(tmp_path, 1.0)), "--out",
               str(tmp_path / "p.npz"), "-n", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "diverged" in err and "nothing was written" in err and "Traceback" not in err


def test_a_missing_length_is_named_with_the_lengths_that_fit(tmp_path, capsys):
    rc = main(["assimilate", "--pretrained", "lorenz63", "--observations", str(_obs(tmp_path, 1.0, length=0)),
               "--out", str(tmp_path / "p.npz"), "-n", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "--length N" in err and "fit 16 to 20 states" in err


def test_a_text_file_named_npz_gets_no_unsafe_advice(tmp_path, capsys):
    bad = tmp_path / "obs.npz"
    bad.write_text("y = 1, 2, 3\n")
    rc = main(["assimilate", "--pretrained", "lorenz63", "--observations", str(bad), "--out", str(tmp_path / "p.npz"),
               "-n", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "not an .npz archive" in err and "pickle" not in err


def test_an_unwritable_output_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    import physics.fields.api as fapi

    monkeypatch.setattr(fapi, "load_model", lambda *a, **k: pytest.fail("the model was loaded before the check"))
    rc = main(["assimilate", "--pretrained", "lorenz63", "--observations", str(_obs(tmp_path, 1.0)),
               "--out", "/proc/moldiff_test_x.npy", "-n", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot write /proc/moldiff_test_x.npy" in err and ".tmp" not in err
