"""The particle task: config checks, every method's loss, sampling with log q, evaluation and its files."""

import dataclasses
from pathlib import Path

import pytest
import torch

import moldiff
from moldiff.config import ConfigError
from physics.particles import reference
from physics.particles.io import read_extxyz, read_extxyz_energies
from physics.particles.reference import ReferenceRecipe
from physics.particles.task import ParticleTask

ROOT = Path(__file__).resolve().parents[3]
TINY = {
    "dw4": ReferenceRecipe("dw4", sizes=(2000, 300, 600), samples_per_chain=(20, 20, 20), burn_in=300, thin=5,
                           step_size=0.02, seed_offset=1000, init="gaussian", init_scale=2.0, trace_chains=4),
    "lj13": ReferenceRecipe("lj13", sizes=(400, 100, 200), samples_per_chain=(20, 20, 20), burn_in=200, thin=5,
                            step_size=1e-3, seed_offset=2000, init="ball", init_scale=0.7, minimize_steps=100,
                            trace_chains=4),
}
METHODS = {
    "icfm": ["process.kind=flow", "coupling.kind=independent"],
    "otcfm": ["process.kind=flow", "coupling.kind=ot"],
    "eqotcfm": ["process.kind=flow", "coupling.kind=eq_ot"],
    "sbcfm": ["process.kind=flow", "process.noise=bridge", "process.sigma=0.5", "coupling.kind=sinkhorn",
              "coupling.reg=0.5", "coupling.normalize_cost=false"],
    "vp": ["process.kind=vp", "model.prediction=eps", "sampler.name=euler_maruyama", "coupling.kind=independent"],
    "ve": ["process.kind=ve", "process.sigma_max=10", "model.prediction=eps", "sampler.name=euler_maruyama",
           "coupling.kind=independent"],
}


@pytest.fixture
def tiny_reference(tmp_path, monkeypatch):
    """Tiny MCMC recipes in a private cache (the real ones take minutes to build)."""
    monkeypatch.setenv("MOLDIFF_CACHE", str(tmp_path / "cache"))
    for name, recipe in TINY.items():
        monkeypatch.setitem(reference.RECIPES, name, recipe)
    return tmp_path


def _cfg(tmp_path, system="dw4", extra=()):
    sets = [f"data.system={system}", "data.reference=full", f"runs_root={tmp_path / 'runs'}", "tracking.enabled=false", "train.steps=6",
            "train.batch_size=16", "train.log_every=3", "model.hidden=16", "model.layers=2", "sampler.steps=5",
            "eval.n_samples=40", "eval.nll_points=10", "eval.n_reference=200", "eval.likelihood_steps=5",
            "eval.batch_size=32", *extra]
    return moldiff.load_config(ROOT / "configs" / "smoke" / "particles_dw4_eqotcfm.yaml", sets)


@pytest.mark.parametrize(("bad", "key"), [
    (["process.kind=vp", "model.prediction=eps", "sampler.name=euler_maruyama"], "coupling.kind"),
    (["sampler.name=euler_maruyama"], "sampler.name"),
    (["model.prediction=eps"], "model.prediction"),
    (["data.system=lj7"], "data.system"),
    (["coupling.kind=hungarian"], "coupling.kind"),
])
def test_config_errors_name_the_key(bad, key, tmp_path):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _cfg(tmp_path, extra=bad)


@pytest.mark.usefixtures("global_rng")
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_gives_a_finite_per_sample_loss(method, tiny_reference):
    cfg = _cfg(tiny_reference, extra=METHODS[method])
    task = ParticleTask(cfg)
    torch.manual_seed(0)
    model = task.build_model()
    batch = next(task.train_batches(start_step=0, rank=0, world_size=1, device="cpu"))
    assert batch.shape == (16, 4, 2)
    loss = task.loss(model, batch, torch.Generator().manual_seed(0))
    assert loss.shape == (16,) and bool(torch.isfinite(loss).all())
    loss.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.usefixtures("global_rng")
def test_log_q_from_the_sampling_pass_matches_the_likelihood_of_the_samples(tiny_reference):
    """The ESS needs log q(x) of model samples: the forward (sampling) pass and a backward likelihood pass over
    the same samples must agree (exact divergence on the zero-CoM subspace, both ways)."""
    cfg = _cfg(tiny_reference, extra=["eval.likelihood_method=rk45"])
    task = ParticleTask(cfg)
    torch.manual_seed(0)
    model = task.build_model().double()
    with torch.no_grad():  # make the random network's flow visibly non-trivial
        for p in model.parameters():
            p.mul_(3.0)
    task._sigma_data = 1.0
    x, log_q, _ = task.sample_with_log_q(model, 12, generator=torch.Generator().manual_seed(1), progress=False)
    assert x.shape == (12, 4, 2) and x.dtype == torch.float64
    torch.testing.assert_close(x.mean(1), torch.zeros(12, 2, dtype=torch.float64), atol=1e-10, rtol=0)
    back = -task.test_nll(model, x, generator=torch.Generator().manual_seed(2), progress=False)
    torch.testing.assert_close(back, log_q, atol=1e-2, rtol=0)  # two adaptive RK45 solves at rtol 1e-5
    # and it is not the prior's density: the flow moved the samples
    z_logp = -0.5 * (x**2).sum((1, 2))
    assert float((log_q - z_logp).abs().max()) > 0.1


@pytest.mark.parametrize("method", ["eqotcfm", "vp"])
def test_train_and_evaluate_end_to_end(method, tiny_reference):
    res = moldiff.train(_cfg(tiny_reference, extra=METHODS[method]), progress=False)
    m = res.metrics
    for key in ["energy/w1", "energy/w2", "distance/tv", "nll", "ess", "nfe", "sample_seconds", "nll/target_entropy"]:
        assert key in m and m[key] == m[key], key  # present and not NaN
    assert 0.0 <= m["distance/tv"] <= 1.0 and 0.0 < m["ess"] <= 1.0
    if method == "eqotcfm":  # the ESS pass's error bars, and the reweighted mean energy
        assert m["ess_se"] > 0 and m["log_z_se"] > 0 and m["ess_n"] == 40 and "energy/mean_reweighted" in m
    task, model = moldiff.load_model(res.checkpoint, device="cpu")
    ev = task.evaluate(model, generator=torch.Generator().manual_seed(0), progress=False)
    assert set(ev.figures) == {"energy_histogram", "distance_histogram", "samples"}
    x = read_extxyz(ev.files["samples"], dim=2)
    assert x.shape == (40, 4, 2)
    e = read_extxyz_energies(ev.files["samples"])
    torch.testing.assert_close(torch.from_numpy(e), task.system.energy(torch.from_numpy(x).double()), atol=1e-5, rtol=1e-6)


def test_evaluation_refines_samples_by_mala(tiny_reference):
    """eval.mala_steps: the samples are refined by MALA (step size from the reference chains); metrics and the
    refined curve in the histograms; more steps bring the mean energy of a barely trained model towards the
    reference."""
    res = moldiff.train(_cfg(tiny_reference, extra=["eval.n_samples=0"]), progress=False)
    means = {}
    for steps in (0, 200):
        task, model = moldiff.load_model(res.checkpoint, device="cpu", overrides=[
            "eval.n_samples=200", "eval.nll_points=0", f"eval.mala_steps={steps}", "eval.ess=false"])
        m = task.evaluate(model, generator=torch.Generator().manual_seed(0), progress=False).metrics
        means[steps] = m["energy/mean_mala"] if steps else m["energy/mean_model"]
        if steps:
            assert m["mala/energy_evals_per_sample"] == steps + 1 and 0.2 < m["mala/acceptance"] < 1.0
            assert m["mala/energy/w2"] < m["energy/w2"]
    ref = m["energy/mean_reference"]
    assert abs(means[200] - ref) < abs(means[0] - ref)


def test_lj13_score_model_samples_and_saves(tiny_reference):
    cfg = _cfg(tiny_reference, "lj13", METHODS["vp"])  # (the eps = 1 cluster: its tiny recipe is patched in)
    res = moldiff.train(dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, n_samples=0)), progress=False)
    out = tiny_reference / "s.extxyz"
    x = moldiff.sample(res.checkpoint, 5, out=out, progress=False)
    assert x.shape == (5, 13, 3)
    assert read_extxyz(out).shape == (5, 13, 3)
    with pytest.raises(ValueError, match="extxyz"):
        moldiff.sample(res.checkpoint, 2, out=tiny_reference / "s.sdf", progress=False)
