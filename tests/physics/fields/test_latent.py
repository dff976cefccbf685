"""Latent trajectory diffusion end to end on the Kolmogorov smoke set: a field autoencoder, a latent prior trained
on its encodings, sampling and assimilation through the decoder; the decoder-composed observation operator
against a finite-difference Jacobian-vector product; config errors that name the key."""

from __future__ import annotations

import pytest
import torch

import moldiff
from moldiff.config import ConfigError
from moldiff.loading import load_config
from moldiff.pretrained import export_pretrained, load_pretrained_file
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


def _old_style(ckpt, out, autoencoder: str | None = None):
    """A copy of a latent prior's checkpoint as written before issue 29 (no autoencoder or latent statistics in
    its sampling state), naming ``autoencoder`` if given."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    for key in ("autoencoder", "latent_stats"):
        state["sampling"].pop(key)
    if autoencoder is not None:
        state["config"]["latent"]["autoencoder"] = autoencoder
    torch.save(state, out)
    return out


def _moved(ckpt, out):
    """A copy of a checkpoint whose config names an autoencoder that is nowhere (the folder it came from is gone)."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state["config"]["latent"]["autoencoder"] = str(out.parent / "gone" / "last.pt")
    torch.save(state, out)
    return out


def _samples(ckpt, **kw):
    task, model = moldiff.load_model(ckpt, overrides=["sampler.steps=3"], **kw)
    return task.sample(model, 2, generator=torch.Generator().manual_seed(5), length=4, progress=False)


def test_a_moved_latent_checkpoint_loads_from_its_own_file(checkpoints, tmp_path, monkeypatch):
    ae_ckpt, ckpt = checkpoints
    reference = _samples(ckpt)
    moved = _moved(ckpt, tmp_path / "moved.pt")
    # no dataset either: the normalisations travel in the file
    monkeypatch.setattr("physics.fields.datasets.load_trajectories", lambda *a, **k: pytest.fail("read a dataset"))
    torch.testing.assert_close(_samples(moved), reference, rtol=0, atol=0)
    # a shipped file made from it too
    shipped = export_pretrained(moved, tmp_path / "shipped.pt")
    task, model, _ = load_pretrained_file(shipped)
    truth = torch.zeros(1, 4, 32, 32)
    y = task.observe(truth.double(), torch.Generator().manual_seed(0)).float()
    post = task.assimilate(model, y, n=2, length=4, method="sda", generator=torch.Generator().manual_seed(1),
                           progress=False)
    assert post.shape == (1, 2, 4, 32, 32) and torch.isfinite(post).all()


def test_a_checkpoint_from_before_issue_29_still_loads_through_its_path(checkpoints, tmp_path):
    ae_ckpt, ckpt = checkpoints
    old = _old_style(ckpt, tmp_path / "old.pt")
    torch.testing.assert_close(_samples(old), _samples(ckpt), rtol=1e-6, atol=1e-5)  # latent stats recomputed
    with pytest.raises(ConfigError, match="latent.autoencoder: .*gone.*not found"):
        _samples(_moved(old, tmp_path / "old_moved.pt"))


def test_the_autoencoder_may_come_from_a_latent_prior_that_carries_it(checkpoints, tmp_path):
    # warm starts: a new latent prior names the shipped (or any) latent prior as its autoencoder's source
    ae_ckpt, ckpt = checkpoints
    base = ["tracking.enabled=false", f"runs_root={tmp_path}"]
    task = get_task("latent_trajectory")(load_config("configs/smoke/kolmogorov_latent.yaml",
                                                     [*base, f"latent.autoencoder={_moved(ckpt, tmp_path / 'm.pt')}"]))
    _, ae = moldiff.load_model(ae_ckpt)
    assert all(torch.equal(a, b) for a, b in zip(task.autoencoder.state_dict().values(), ae.state_dict().values()))


def test_config_errors_name_the_key(checkpoints, tmp_path):
    ae_ckpt, ckpt = checkpoints
    base = ["tracking.enabled=false", f"runs_root={tmp_path}"]
    cases = [("latent.autoencoder=", "latent.autoencoder"),
             (f"latent.autoencoder={tmp_path / 'none.pt'}", "latent.autoencoder: .*none.pt not found"),
             (f"latent.autoencoder={tmp_path}", "latent.autoencoder: .* is a folder"),
             ("latent.autoencoder=pretrained:nope", "latent.autoencoder: unknown pretrained model 'nope'"),
             (f"latent.autoencoder={_old_style(ckpt, tmp_path / 'old.pt')}",
              "is a 'latent_trajectory' checkpoint, not a field_autoencoder \\(nor a latent prior that carries one"),
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
