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
               "--set", "model.width=8"])
    assert rc == 2 and "model.width" in capsys.readouterr().err
