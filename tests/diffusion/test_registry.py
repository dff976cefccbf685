"""The one sampler registry: every sampler by name, its options passed through and checked in one place, and
run_sampler giving exactly what the function gives on the grid it names."""

from __future__ import annotations

import warnings

import pytest
import torch

from moldiff.config import ConfigError, SamplerConfig, from_dict
from moldiff.diffusion import (
    SAMPLERS,
    VPSDE,
    CategoricalPath,
    EuclideanSpace,
    FlowPath,
    MixedPrediction,
    MixedState,
    check_sampler_options,
    flow_time_grid,
    get_sampler,
    run_sampler,
    sample_mixed_flow,
    sampler_names,
    time_grid,
)
from moldiff.diffusion.guidance import sample_dps
from moldiff.diffusion.inpainting import inpainting_observation, sample_repaint
from moldiff.loading import load_config

from .gaussian import GaussianTarget

D = torch.float64


def _target():
    return GaussianTarget(VPSDE(), [1.0, -2.0, 0.5], [0.25, 4.0, 1.0])


def test_every_sampler_is_registered_once_with_its_own_options():
    assert {"ancestral", "ddim", "euler_maruyama", "pc", "ode_euler", "ode_heun", "ode_rk45", "heun_churn", "dps",
            "repaint", "mixed_flow"} == set(SAMPLERS)
    assert SAMPLERS["pc"].options() == {"snr": 0.16, "corrector_steps": 1, "predictor": "euler_maruyama",
                                        "denoise": True}
    assert set(SAMPLERS["ode_rk45"].options()) == {"rtol", "atol", "denoise"}
    assert SAMPLERS["ode_euler"].options() == {"denoise": True}  # the bound method is not an option
    assert "observation" not in SAMPLERS["dps"].options() and SAMPLERS["dps"].needs == ("observation",)
    # the samplers a config may name alone: no caller-supplied arguments, the process grid
    assert sampler_names(standalone=True) == sorted(set(SAMPLERS) - {"dps", "repaint", "mixed_flow"})


@pytest.mark.parametrize("name,options,steps", [("ancestral", {}, 20), ("pc", {"snr": 0.05, "predictor": "ddim"}, 20),
                                                ("heun_churn", {"s_churn": 3.0}, 10), ("ode_rk45", {"rtol": 1e-4}, 1)])
def test_run_sampler_is_the_function_on_its_grid(name, options, steps):
    target = _target()
    x = target.sample(1.0, 64, torch.Generator().manual_seed(0))
    ts = time_grid(target.process, steps, dtype=D)
    direct = get_sampler(name)(target.denoiser(), x, ts, generator=torch.Generator().manual_seed(1), progress=False,
                               **options)
    ran = run_sampler(name, target.denoiser(), x, steps=steps, generator=torch.Generator().manual_seed(1),
                      progress=False, **options)
    torch.testing.assert_close(ran, direct, rtol=0, atol=0)


def test_dps_and_repaint_through_the_registry():
    target = _target()
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    x = target.sample(1.0, 32, torch.Generator().manual_seed(0))
    known, mask = torch.tensor([1.0, 0.0, 0.0], dtype=D), torch.tensor([True, False, False])
    ts = time_grid(target.process, 15, dtype=D)
    obs = inpainting_observation(known, mask, noise_std=1e-2)
    torch.testing.assert_close(
        run_sampler("dps", target.denoiser(), x, steps=15, generator=g(), progress=False, observation=obs, zeta=0.5),
        sample_dps(target.denoiser(), x, ts, observation=obs, zeta=0.5, generator=g(), progress=False), rtol=0, atol=0)
    torch.testing.assert_close(
        run_sampler("repaint", target.denoiser(), x, steps=15, generator=g(), progress=False, known=known, mask=mask),
        sample_repaint(target.denoiser(), x, ts, known=known, mask=mask, generator=g(), progress=False), rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs observation"):
        run_sampler("dps", target.denoiser(), x, steps=15, progress=False)


def test_mixed_flow_through_the_registry_runs_on_the_flow_grid():
    c, p = torch.tensor([1.5, -2.0]), torch.tensor([0.7, 0.2, 0.1])
    seen = []

    def model(state, t):
        seen.append(float(t[0]))
        return MixedPrediction(c.expand(state.x.shape[0], 2), {"k": p.log().expand(state.x.shape[0], 3)})

    state = MixedState(torch.randn(8, 2, generator=torch.Generator().manual_seed(0)),
                       {"k": CategoricalPath(3, "mask").prior_sample((8,))})
    kw = dict(path=FlowPath(), categorical={"k": CategoricalPath(3, "mask")}, space=EuclideanSpace(), progress=False)
    out = run_sampler("mixed_flow", model, state, steps=4, spacing="quadratic", generator=torch.Generator().manual_seed(1),
                      **kw)
    assert seen == pytest.approx(flow_time_grid(4, kind="quadratic")[:-1].tolist())
    ref = sample_mixed_flow(model, state, flow_time_grid(4, kind="quadratic"), generator=torch.Generator().manual_seed(1),
                            **kw)
    torch.testing.assert_close(out.x, ref.x, rtol=0, atol=0)
    assert torch.equal(out.tokens["k"], ref.tokens["k"])


def test_options_are_checked_in_one_place_with_the_key_named():
    assert check_sampler_options("pc", {"snr": 1, "corrector_steps": 2}) == {"snr": 1.0, "corrector_steps": 2}
    assert check_sampler_options("ode_rk45", {"rtol": "1e-4"}) == {"rtol": 1e-4}  # YAML 1.1 reads 1e-4 as a string
    with pytest.raises(ValueError, match=r"sampler.options.snr: sampler 'ddim' has no option 'snr' \(its options: denoise\)"):
        check_sampler_options("ddim", {"snr": 0.1})
    with pytest.raises(ValueError, match=r"sampler.options.corrector_steps: expected an int"):
        check_sampler_options("pc", {"corrector_steps": 1.5})
    with pytest.raises(ValueError, match="unknown predictor 'rk4'"):
        check_sampler_options("pc", {"predictor": "rk4"})
    with pytest.raises(ValueError, match="s_churn >= 0"):
        check_sampler_options("heun_churn", {"s_churn": -1.0})
    # the sampler itself runs the same check
    target = _target()
    with pytest.raises(ValueError, match="s_churn >= 0"):
        get_sampler("heun_churn")(target.denoiser(), torch.zeros(2, 3, dtype=D), time_grid(target.process, 2, dtype=D),
                                  s_churn=-1.0, progress=False)


def test_config_options_pass_through_and_flat_keys_of_earlier_versions_still_read(tmp_path):
    cfg = SamplerConfig(name="pc", steps=7, options={"snr": 0.1})
    assert cfg.arguments() == {"steps": 7, "spacing": "uniform", "rho": 7.0, "snr": 0.1, "denoise": True}
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        old = from_dict(SamplerConfig, {"name": "pc", "snr": 0.2, "predictor": "ddim"}, prefix="sampler")
        kw = SamplerConfig(name="heun_churn", s_churn=2.0)
    assert old.options == {"snr": 0.2, "predictor": "ddim"} and kw.options == {"s_churn": 2.0}
    messages = [str(x.message) for x in w if issubclass(x.category, DeprecationWarning)]
    assert "sampler: snr, predictor are now sampler.options.KEY (set for the name they apply to)" in messages
    assert "SamplerConfig: s_churn are now SamplerConfig.options.KEY (set for the name they apply to)" in messages
    # a flat union of earlier versions kept every key: those of another sampler had no effect and are dropped
    union = from_dict(SamplerConfig, {"name": "ode_heun", "snr": 0.16, "s_churn": 0.0, "rtol": 1e-5}, prefix="s")
    assert union.options == {}
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: toy2d\nsampler: {name: ddim, options: {snr: 0.1}}\n")
    with pytest.raises(ConfigError, match="sampler.options.snr: sampler 'ddim' has no option"):
        load_config(bad)
    bad.write_text("task: toy2d\nsampler: {name: dps}\n")
    with pytest.raises(ConfigError, match="sampler.name: must be one of"):
        load_config(bad)


def test_options_that_are_not_a_mapping_beside_a_flat_key_are_a_config_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    for options in ("true", "[a, b]"):
        bad.write_text(f"task: toy2d\nsampler: {{name: pc, snr: 0.1, options: {options}}}\n")
        with pytest.raises(ConfigError, match="sampler.options: expected a mapping"):
            load_config(bad)
