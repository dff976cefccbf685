"""Latent trajectory diffusion end to end on the Kolmogorov smoke set: a field autoencoder, a latent prior trained
on its encodings, sampling and assimilation through the decoder; the decoder-composed observation operator
against a finite-difference Jacobian-vector product; config errors that name the key."""

from __future__ import annotations

import pytest
import torch

import moldiff
from moldiff.config import ConfigError
from moldiff.loading import load_config
from moldiff.tasks import get_task


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    ae_cfg = load_config("configs/smoke/kolmogorov_ae.yaml", [f"runs_root={root}", "tracking.enabled=false",
                                                              "train.steps=20"])
    ae = moldiff.train(ae_cfg, progress=False)
    assert ae.metrics["recon/compression"] == 32 * 32 / (2 * 8 * 8)
    assert ae.metrics["recon/rmse"] > 0 and "spectrum/log_error_k1-3" in ae.metrics
    cfg = load_config("configs/smoke/kolmogorov_latent.yaml", [f"runs_root={root}", "tracking.enabled=false",
                                                               f"latent.autoencoder={ae.checkpoint}",
                                                               "train.steps=20", "eval.n_trajectories=0"])
    return ae.checkpoint, moldiff.train(cfg, progress=False).checkpoint


def test_latent_prior_samples_and_assimilates_in_physical_space(checkpoints):
    ae_ckpt, ckpt = checkpoints
    task, model = moldiff.load_model(ckpt, overrides=["sampler.steps=4"])
    assert task.model_shape == (2, 8, 8) and task.shape == (32, 32)
    z = task.normalize(task.trajectories("train"))
    assert z.shape == (8, 16, 2, 8, 8)
    torch.testing.assert_close(z.mean((0, 1, 3, 4)), torch.zeros(2), atol=1e-4, rtol=0)  # standardised per channel
    torch.testing.assert_close(z.std((0, 1, 3, 4)), torch.ones(2), atol=1e-3, rtol=0)
    g = torch.Generator().manual_seed(0)
    assert task.sample(model, 2, generator=g, length=6, progress=False).shape == (2, 6, 32, 32)
    truth = task.trajectories("test")[:1, :6]
    y = task.observe(truth.double(), g).float()
    for method in ("sda", "mmps", "dps"):
        post = task.assimilate(model, y, n=2, length=6, method=method, generator=g, progress=False)
        assert post.shape == (1, 2, 6, 32, 32) and torch.isfinite(post).all()
    # the physical normalisation is the autoencoder's, whatever this config's data.n_train
    ae_task, _ = moldiff.load_model(ae_ckpt)
    assert all(torch.equal(a, b) for a, b in zip(task.stats, ae_task.stats))


def test_the_decoder_composed_operator_against_finite_differences(checkpoints):
    """J v of z -> A(D(z)) (what the guidance differentiates) against central differences, in float64."""
    task, _ = moldiff.load_model(checkpoints[1])
    task.autoencoder.double()
    task._latent_stats = tuple(s.double() for s in task.latent_stats)
    g = torch.Generator().manual_seed(1)
    truth = task.trajectories("test")[:2, :4].double()
    obs = task.observation_model(task.observe(truth, g), 4)
    z = torch.randn(2, 4, *task.model_shape, generator=g, dtype=torch.float64)
    v = torch.randn(z.shape, generator=g, dtype=torch.float64)
    _, jv = torch.autograd.functional.jvp(obs.operator, z, v)  # (torch.func.jvp segfaults on frozen convs here)
    eps = 1e-6
    fd = (obs.operator(z + eps * v) - obs.operator(z - eps * v)) / (2 * eps)
    torch.testing.assert_close(jv, fd, rtol=1e-6, atol=1e-7)
    assert jv.abs().max() > 1e-3
    # and it is the pixel operator applied to the decoded fields
    s = float(task.stats[1].mean())
    torch.testing.assert_close(obs.operator(z), task.operator(task.denormalize(z)) / s)


def test_config_errors_name_the_key(checkpoints, tmp_path):
    ae_ckpt, ckpt = checkpoints
    base = ["tracking.enabled=false", f"runs_root={tmp_path}"]
    cases = [("latent.autoencoder=", "latent.autoencoder"),
             (f"latent.autoencoder={tmp_path / 'none.pt'}", "no checkpoint at"),
             (f"latent.autoencoder={ckpt}", "not a field_autoencoder"),
             ("model.backbone=mlp", "model.backbone"),
             ("model.options.dim=31", "model.options: dim 31 must be divisible by heads"),
             ("model.dim=31", "model.options: dim 31")]  # the key of earlier versions
    cases.append(("data.size=full", "trained on kolmogorov \\(32, 32\\)"))  # an autoencoder of another grid
    for override, needle in cases:
        with pytest.raises(ConfigError, match=needle), torch.random.fork_rng(devices=[]):
            cfg = load_config("configs/smoke/kolmogorov_latent.yaml", [*base, f"latent.autoencoder={ae_ckpt}", override])
            get_task(cfg.task)(cfg).build_model()
    with pytest.raises(ConfigError, match="model.channels"):
        load_config("configs/smoke/kolmogorov_ae.yaml", ["model.channels=[12]"]).check()
