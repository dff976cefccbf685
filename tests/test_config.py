"""The config system: YAML -> task dataclass, ``--set`` overrides, type and value checks, round trips."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch
import yaml

from moldiff.config import (
    ConfigError,
    ExperimentConfig,
    ProcessConfig,
    SamplerConfig,
    TrackingConfig,
    TrainConfig,
    flatten,
    from_dict,
    to_dict,
    to_yaml,
)
from moldiff.loading import apply_overrides, load_config, parse_overrides, read_yaml, validate
from physics.toy2d import Toy2DConfig

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
SMOKE = sorted((REPO / "configs" / "smoke").glob("*.yaml"))
ALL_CONFIGS = CONFIGS + SMOKE
VP_SMOKE = REPO / "configs" / "smoke" / "toy2d_vp.yaml"


def _ids(paths):
    return [str(p.relative_to(REPO / "configs")) for p in paths]


def _write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _error(source, overrides=None) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(source, overrides)
    return str(exc.value)


# --------------------------------------------------------------------------------------------------
# the shipped configs
# --------------------------------------------------------------------------------------------------
def test_config_folders_are_not_empty():
    assert len(CONFIGS) >= 4
    assert len(SMOKE) >= 4


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=_ids(ALL_CONFIGS))
def test_every_shipped_config_loads(path):
    raw = yaml.safe_load(path.read_text())
    cfg = load_config(path)
    from moldiff.tasks import get_task

    assert cfg.task == raw["task"] and isinstance(cfg, get_task(cfg.task).config_class)
    assert cfg.task != "toy2d" or isinstance(cfg, Toy2DConfig)
    assert cfg.name == raw.get("name", path.stem)  # run name: from the file name unless given
    # what the YAML says is what the dataclass holds (values, not just keys)
    for section in ("process", "precond", "loss", "train", "sampler", "data", "model", "eval", "tracking", "coupling",
                    "observation"):
        for key, value in (raw.get(section) or {}).items():
            got = getattr(getattr(cfg, section), key)
            assert got == value, f"{section}.{key}: YAML {value!r}, config {got!r}"
    # file name and process agree (toy2d_<kind>[_...].yaml, toy2d_morph_<method>.yaml for flow matching;
    # particle configs are <system>_<method>; qm9 configs name their recipe)
    if cfg.task == "toy2d" and cfg.process.kind != "flow":
        assert re.search(rf"_{cfg.process.kind}(_|$)", path.stem), (path.stem, cfg.process.kind)
    if cfg.task == "toy2d" and cfg.process.kind == "flow":
        assert "_morph_" in path.stem or path.stem.endswith("_flow"), path.stem
    if cfg.task == "particles":
        assert cfg.data.system.split("_")[0] in path.stem, (path.stem, cfg.data.system)
    if cfg.task == "trajectory":  # <system>_<setting>.yaml, smoke/trajectory_<system>.yaml
        assert path.stem.startswith(cfg.data.system) or path.stem == f"trajectory_{cfg.data.system}", path.stem
    # the process builds and the sampler exists
    proc = cfg.process.build()
    assert proc.t_min >= 0
    validate(cfg)


@pytest.mark.parametrize("path", SMOKE, ids=_ids(SMOKE))
def test_smoke_configs_are_small(path):
    cfg = load_config(path)
    assert cfg.train.steps <= 1000
    if cfg.task in ("trajectory", "latent_trajectory"):
        assert cfg.data.size == "smoke"
        m = cfg.model
        o = m.options  # the backbone's own, over its defaults (FlatWindow 256 wide, UNet up to 128, transformer 128)
        assert {"mlp": o.get("width", 256), "unet": max(o.get("channels", [128])),
                "transformer": o.get("dim", 128)}[m.backbone] <= 128
        assert cfg.eval.n_trajectories * cfg.eval.ensemble <= 16 and cfg.sampler.steps <= 50
        assert cfg.eval.prior_samples <= 4
        return
    if cfg.task == "field_autoencoder":
        assert cfg.data.size == "smoke" and max(cfg.model.channels) <= 64 and cfg.eval.n_states <= 64
        return
    width = getattr(cfg.model, "width", None) or getattr(cfg.model, "hidden")
    assert width <= 128
    assert cfg.eval.n_samples <= 1000


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=_ids(ALL_CONFIGS))
def test_round_trip_dict_and_yaml(path, tmp_path):
    cfg = load_config(path)
    assert from_dict(type(cfg), to_dict(cfg)) == cfg
    # the YAML dump (what `config show` prints) loads back to the same config
    dumped = _write(tmp_path, to_yaml(cfg), "dumped.yaml")
    assert load_config(dumped) == cfg


def test_defaults_are_filled_in():
    cfg = load_config(VP_SMOKE)
    assert cfg.train.warmup_steps == TrainConfig().warmup_steps == 0
    assert cfg.train.betas == [0.9, 0.999]
    assert cfg.sampler.options == {} and cfg.sampler.denoise == SamplerConfig().denoise
    assert cfg.tracking.enabled is True
    assert cfg.process.beta_max == ProcessConfig().beta_max
    assert cfg.model.time_dim == 64  # toy2d default, not in the smoke YAML
    assert cfg.run_dir == Path("runs") / "smoke" / "toy2d_vp"


def test_dict_source_keeps_name_and_is_not_mutated():
    data = {"task": "toy2d", "train": {"steps": 3}}
    cfg = load_config(data, ["train.steps=5"])
    assert cfg.train.steps == 5
    assert cfg.name == ""
    assert data == {"task": "toy2d", "train": {"steps": 3}}


def test_explicit_name_wins_over_file_stem(tmp_path):
    p = _write(tmp_path, "task: toy2d\nname: my_run\n")
    assert load_config(p).name == "my_run"
    assert load_config(_write(tmp_path, "task: toy2d\n", "other.yaml")).name == "other"


# --------------------------------------------------------------------------------------------------
# overrides
# --------------------------------------------------------------------------------------------------
def test_parse_overrides_yaml_typed_values():
    parsed = parse_overrides([
        "train.lr=0.0001",
        "train.lr=1.0e-4",
        "tracking.enabled=false",
        "train.steps=12",
        "data.target=two_moons",
        "eval.samplers=[pc, ode_heun]",
        "process.t_min=null",
        "name=",
        "name=a=b",  # only the first '=' splits
        " seed =3",
    ])
    assert parsed == [
        ("train.lr", 1e-4),
        ("train.lr", 1e-4),
        ("tracking.enabled", False),
        ("train.steps", 12),
        ("data.target", "two_moons"),
        ("eval.samplers", ["pc", "ode_heun"]),
        ("process.t_min", None),
        ("name", ""),
        ("name", "a=b"),
        ("seed", 3),
    ]
    assert type(parsed[3][1]) is int and type(parsed[0][1]) is float
    assert parse_overrides(None) == [] and parse_overrides([]) == []


@pytest.mark.parametrize("item", ["train.lr", "=3", "  =x"])
def test_parse_overrides_rejects_malformed(item):
    with pytest.raises(ConfigError) as exc:
        parse_overrides([item])
    assert repr(item) in str(exc.value)


def test_parse_overrides_rejects_invalid_yaml_value():
    with pytest.raises(ConfigError, match="train.lr"):
        parse_overrides(["train.lr=[1"])


def test_apply_overrides_nested_and_copying():
    data = {"train": {"lr": 1.0}, "task": "toy2d"}
    out = apply_overrides(data, [("train.lr", 2.0), ("model.width", 8), ("a.b.c", 1)])
    assert out == {"train": {"lr": 2.0}, "task": "toy2d", "model": {"width": 8}, "a": {"b": {"c": 1}}}
    assert data == {"train": {"lr": 1.0}, "task": "toy2d"}  # input untouched
    with pytest.raises(ConfigError, match="train.lr is not a section"):
        apply_overrides(data, [("train.lr.x", 1)])


def test_load_config_applies_overrides():
    cfg = load_config(VP_SMOKE, [
        "train.lr=0.0001",
        "tracking.enabled=false",
        "train.steps=7",
        "data.target=two_moons",
        "eval.samplers=[pc]",
        "model.width=32",
        "process.t_min=0.01",
        "train.betas=[0.5, 0.9]",
        "name=custom",
    ])
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    assert cfg.tracking.enabled is False
    assert cfg.train.steps == 7
    assert cfg.data.target == "two_moons"
    assert cfg.eval.samplers == ["pc"]
    assert cfg.model.width == 32
    assert cfg.process.t_min == 0.01
    assert cfg.train.betas == [0.5, 0.9]
    assert cfg.name == "custom"
    assert cfg.run_dir.name == "custom"
    # untouched values stay as in the YAML
    assert cfg.train.batch_size == 256 and cfg.process.kind == "vp"


def test_later_override_wins():
    cfg = load_config(VP_SMOKE, ["train.steps=3", "train.steps=9"])
    assert cfg.train.steps == 9


def test_task_can_come_from_an_override(tmp_path):
    p = _write(tmp_path, "train: {steps: 4}\n")
    cfg = load_config(p, ["task=toy2d"])
    assert isinstance(cfg, Toy2DConfig) and cfg.train.steps == 4


def test_override_float_in_exponent_notation():
    cfg = load_config(VP_SMOKE, ["train.lr=1e-4"])
    assert cfg.train.lr == pytest.approx(1e-4)


def test_yaml_float_in_exponent_notation(tmp_path):
    p = _write(tmp_path, "task: toy2d\ntrain: {lr: 1e-4}\n")
    assert load_config(p).train.lr == pytest.approx(1e-4)


# --------------------------------------------------------------------------------------------------
# unknown keys
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, key", [
    ("train.lrr=1.0", "train.lrr"),
    ("lrr=1.0", "lrr"),
    ("process.kindd=vp", "process.kindd"),
    ("eval.samplrs=[pc]", "eval.samplrs"),
    ("data.targett=x", "data.targett"),
    ("tracking.enable=false", "tracking.enable"),
    ("bogus.section=1", "bogus"),
])
def test_unknown_key_via_override(override, key):
    msg = _error(VP_SMOKE, [override])
    assert repr(key) in msg, msg
    assert "unknown config key" in msg


@pytest.mark.parametrize("text, key", [
    ("task: toy2d\ntrain: {lrr: 0.1}\n", "train.lrr"),
    ("task: toy2d\nfoo: 1\n", "foo"),
    ("task: toy2d\nmodel: {widht: 3}\n", "model.widht"),
    ("task: toy2d\nsampler: {stepz: 3}\n", "sampler.stepz"),
])
def test_unknown_key_in_yaml(tmp_path, text, key):
    msg = _error(_write(tmp_path, text))
    assert repr(key) in msg, msg


def test_unknown_key_message_lists_known_keys():
    msg = _error(VP_SMOKE, ["train.lrr=1.0"])
    assert "lr" in msg and "batch_size" in msg


# --------------------------------------------------------------------------------------------------
# wrong types
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, key", [
    ("train.steps=ten", "train.steps"),  # string for int
    ("train.steps=1.5", "train.steps"),  # float for int
    ("train.steps=2.0", "train.steps"),  # integral float is still not an int
    ("train.steps=true", "train.steps"),  # bool is not an int
    ("tracking.enabled=1", "tracking.enabled"),  # int for bool
    ("tracking.enabled=yes please", "tracking.enabled"),  # string for bool
    ("train.lr=[1, 2]", "train.lr"),  # list for float
    ("train.lr=abc", "train.lr"),  # string for float
    ("train.lr=true", "train.lr"),  # bool for float
    ("train.betas=0.9", "train.betas"),  # scalar for list
    ("train.betas=[0.9, a]", "train.betas[1]"),  # bad list item
    ("data.target=3", "data.target"),  # int for str
    ("process.t_min=abc", "process.t_min"),  # str for float | None
    ("tracking.uri=5", "tracking.uri"),  # int for str | None
    ("train=5", "train"),  # scalar for a section
    ("seed=[1]", "seed"),
])
def test_wrong_type_names_the_key(override, key):
    msg = _error(VP_SMOKE, [override])
    assert msg.startswith(f"{key}:"), msg


def test_wrong_type_in_yaml(tmp_path):
    msg = _error(_write(tmp_path, "task: toy2d\ntrain:\n  batch_size: '32'\n"))
    assert msg.startswith("train.batch_size:"), msg
    msg = _error(_write(tmp_path, "task: toy2d\nprocess: [vp]\n"))
    assert msg.startswith("process:"), msg


def test_int_accepted_for_float():
    cfg = load_config(VP_SMOKE, ["train.lr=1", "process.beta_max=30", "process.t_min=0"])
    assert cfg.train.lr == 1.0 and type(cfg.train.lr) is float
    assert cfg.process.beta_max == 30.0 and type(cfg.process.beta_max) is float
    assert cfg.process.t_min == 0.0 and type(cfg.process.t_min) is float


def test_optional_fields_accept_null():
    cfg = load_config(VP_SMOKE, ["process.t_min=0.01", "process.t_min=null", "tracking.uri=null"])
    assert cfg.process.t_min is None and cfg.tracking.uri is None
    cfg = load_config(VP_SMOKE, ["tracking.uri=sqlite:///x.db"])
    assert cfg.tracking.uri == "sqlite:///x.db"


def test_from_dict_errors_are_config_errors():
    with pytest.raises(ConfigError, match=r"^lr: expected a float"):
        from_dict(TrainConfig, {"lr": "x"})
    with pytest.raises(ConfigError, match="'train.bogus'"):
        from_dict(TrainConfig, {"bogus": 1}, prefix="train")
    assert from_dict(TrackingConfig, {}) == TrackingConfig()


# --------------------------------------------------------------------------------------------------
# files and the task key
# --------------------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    msg = _error(missing)
    assert "not found" in msg and str(missing) in msg
    # a folder is not a config file either, and is named as one
    assert "is a folder; give a YAML config file" in _error(tmp_path)


def test_invalid_yaml(tmp_path):
    p = _write(tmp_path, "task: toy2d\ntrain: {steps: [1, 2\n")
    msg = _error(p)
    assert "not valid YAML" in msg and str(p) in msg


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("42\n", "int"), ("just text\n", "str")])
def test_non_mapping_top_level(tmp_path, text, kind):
    msg = _error(_write(tmp_path, text))
    assert "mapping" in msg and kind in msg


def test_read_yaml_empty_file_is_empty_mapping(tmp_path):
    assert read_yaml(_write(tmp_path, "# only a comment\n")) == {}


@pytest.mark.parametrize("text", ["# empty\n", "seed: 1\n", "task: ''\n", "task: 3\n", "task: null\n"])
def test_missing_task(tmp_path, text):
    msg = _error(_write(tmp_path, text))
    assert msg.startswith("task:"), msg
    assert "'task'" in msg


def test_unknown_task(tmp_path):
    msg = _error(_write(tmp_path, "task: no_such_task\n"))
    assert msg.startswith("task:") and "no_such_task" in msg
    assert "toy2d" in msg  # lists what is available


def test_unimportable_task_path(tmp_path):
    msg = _error(_write(tmp_path, "task: 'no_such_pkg.mod:Task'\n"))
    assert msg.startswith("task:") and "cannot import" in msg
    msg = _error(_write(tmp_path, "task: 'moldiff.config:ProcessConfig'\n"))
    assert "not a moldiff Task" in msg


def test_task_by_module_path(tmp_path):
    cfg = load_config(_write(tmp_path, "task: 'physics.toy2d:Toy2DTask'\n"))
    assert isinstance(cfg, Toy2DConfig)


# --------------------------------------------------------------------------------------------------
# value checks
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, key", [
    (["train.batch_size=0"], "train.batch_size"),
    (["train.steps=-1"], "train.steps"),
    (["train.lr=0"], "train.lr"),
    (["train.lr=-0.1"], "train.lr"),
    (["train.ema_decay=1.0"], "train.ema_decay"),
    (["train.ema_decay=-0.5"], "train.ema_decay"),
    (["train.grad_clip=-1"], "train.grad_clip"),
    (["train.max_nonfinite=0"], "train.max_nonfinite"),
    (["train.log_every=0"], "train.log_every"),
    (["train.ckpt_every=0"], "train.ckpt_every"),
    (["train.betas=[0.9]"], "train.betas"),
    (["train.keep_checkpoints=0"], "train.keep_checkpoints"),
    (["train.eval_every=-1"], "train.eval_every"),
    (["tracking.timeout=0"], "tracking.timeout"),
    (["model.width=-5"], "model.width"),
    (["model.depth=0"], "model.depth"),
    (["model.time_dim=0"], "model.time_dim"),
    (["eval.n_samples=0"], "eval.n_samples"),
    (["process.kind=bogus"], "process.kind"),
    (["sampler.name=bogus"], "sampler.name"),
    (["sampler.steps=0"], "sampler.steps"),
    (["sampler.spacing=log"], "sampler.spacing"),
    (["sampler.rho=0"], "sampler.rho"),
    (["sampler.name=heun_churn", "sampler.options.s_churn=-1"], "sampler.options"),
    (["sampler.name=pc", "sampler.s_churn=-1", "sampler.options.snr=-1"], "sampler.options"),
    (["precond.kind=karras"], "precond.kind"),
    (["precond.kind=edm"], "model.prediction"),  # the smoke model predicts eps
    (["loss.weighting=edm"], "loss.weighting"),  # EDM's weight needs the preconditioning
    (["loss.time_distribution=gamma"], "loss.time_distribution"),
    (["loss.time_distribution=beta", "loss.beta_a=0"], "loss.beta_a"),
    (["loss.p_std=0"], "loss.p_std"),
    (["loss.cond_dropout=0.2"], "loss.cond_dropout"),  # the smoke toy is unconditional
    (["loss.cond_dropout=1.5", "data.conditional=true"], "loss.cond_dropout"),
    (["eval.guidance=[-1.0]"], "eval.guidance"),
])
def test_validate_value_checks(overrides, key):
    msg = _error(VP_SMOKE, overrides)
    assert msg.startswith(f"{key}:"), msg


def test_validate_ddpm_schedule_and_levels():
    # one policy for an impossible step count: an error naming the key, not a silent clamp
    msg = _error(VP_SMOKE, ["process.kind=ddpm", "process.num_steps=100", "sampler.steps=150"])
    assert msg.startswith("sampler.steps:") and "100 levels" in msg
    msg = _error(VP_SMOKE, ["process.kind=ddpm", "process.num_steps=100", "eval.steps=101"])
    assert msg.startswith("eval.steps:")
    msg = _error(VP_SMOKE, ["process.kind=ddpm", "process.schedule=bogus"])
    assert msg.startswith("process") and "schedule" in msg and "'bogus'" in msg
    msg = _error(VP_SMOKE, ["process.kind=ddpm", "process.num_steps=0"])
    assert msg.startswith("process") and "num_steps" in msg
    # the schedule is only checked for the discrete process
    assert load_config(VP_SMOKE, ["process.schedule=bogus"]).process.schedule == "bogus"
    for schedule in ("linear", "cosine", "polynomial_2"):
        cfg = load_config(VP_SMOKE, ["process.kind=ddpm", f"process.schedule={schedule}"])
        assert cfg.process.build().num_levels == 1000


def test_validate_accepts_boundary_values():
    cfg = load_config(VP_SMOKE, ["train.steps=0", "train.grad_clip=0", "train.ema_decay=0.0", "train.batch_size=1"])
    assert cfg.train.steps == 0 and cfg.train.grad_clip == 0.0


def test_validate_called_directly():
    cfg = load_config(VP_SMOKE)
    validate(cfg)
    bad = dataclasses.replace(cfg, sampler=dataclasses.replace(cfg.sampler, name="nope"))
    with pytest.raises(ConfigError, match=r"^sampler.name:"):
        validate(bad)


@pytest.mark.parametrize("overrides,key", [(["sampler.name=pc", "sampler.options.predictor=bogus"], "sampler.options"),
                                           (["sampler.name=pc", "sampler.predictor=bogus"], "sampler.options"),
                                           (["sampler.options.predictor=ddim"], "sampler.options.predictor"),
                                           (["eval.samplers=[bogus]"], "eval.samplers")])
def test_validate_catches_sampler_typos_before_training(overrides, key):
    msg = _error(VP_SMOKE, overrides)
    assert msg.startswith(key)


def test_validate_catches_bad_device():
    msg = _error(VP_SMOKE, ["train.device=gpu"])
    assert "train.device" in msg


# --------------------------------------------------------------------------------------------------
# serialisation helpers
# --------------------------------------------------------------------------------------------------
def test_flatten():
    assert flatten({"train": {"lr": 1e-3, "betas": [0.9, 0.99]}, "seed": 0, "a": {"b": {"c": None}}}) == {
        "train.lr": 1e-3, "train.betas": [0.9, 0.99], "seed": 0, "a.b.c": None,
    }
    assert flatten({}) == {}
    assert flatten({"x": 1}, prefix="p") == {"p.x": 1}


def test_flatten_of_a_config():
    cfg = load_config(VP_SMOKE)
    flat = flatten(to_dict(cfg))
    assert flat["train.lr"] == 0.002
    assert flat["process.kind"] == "vp"
    assert flat["tracking.experiment"] == "smoke"
    assert flat["eval.samplers"] == cfg.eval.samplers
    assert flat["name"] == "toy2d_vp"
    assert not any(isinstance(v, dict) for k, v in flat.items() if not k.endswith(".options"))
    assert flat["sampler.options"] == {}  # passed through whole: one value
    # one entry per leaf field
    n_leaves = sum(
        len(dataclasses.fields(getattr(cfg, f.name))) if dataclasses.is_dataclass(getattr(cfg, f.name)) else 1
        for f in dataclasses.fields(cfg)
    )
    assert len(flat) == n_leaves


def test_to_dict_is_plain_and_to_yaml_is_ordered():
    cfg = load_config(VP_SMOKE)
    d = to_dict(cfg)
    assert isinstance(d["train"], dict) and d["train"]["lr"] == 0.002
    text = to_yaml(cfg)
    assert yaml.safe_load(text) == d
    assert text.startswith("task: toy2d\n")  # field order kept, not sorted


def test_base_experiment_config_round_trip():
    cfg = ExperimentConfig(task="x", train=TrainConfig(steps=3))
    assert from_dict(ExperimentConfig, to_dict(cfg)) == cfg


def test_duplicate_yaml_keys_are_an_error(tmp_path):
    msg = _error(_write(tmp_path, "task: toy2d\ntrain:\n  lr: 1.0e-3\n  steps: 5\n  lr: 2.0e-3\n"))
    assert "duplicate key 'lr'" in msg and "line 3" in msg
    assert "duplicate key 'x'" in _error(VP_SMOKE, ["eval.samplers={x: 1, x: 2}"])


def test_width_checks_of_every_task_at_dry_run():
    for path, override, key in [
        ("configs/smoke/trajectory_lorenz63.yaml", "model.options.width=-1", "model.options"),
        ("configs/smoke/trajectory_lorenz63.yaml", "model.width=-1", "model.options"),  # the key of earlier versions
        ("configs/smoke/trajectory_kolmogorov.yaml", "model.options.channels=[8, -8]", "model.options"),
        ("configs/smoke/trajectory_kolmogorov.yaml", "model.options.blocks_per_level=0", "model.options"),
        ("configs/smoke/trajectory_kolmogorov.yaml", "model.options.depth=2", "model.options.depth"),  # not a UNet's
        ("configs/smoke/kolmogorov_latent.yaml", "model.options.heads=3", "model.options"),  # 16 % 3
        ("configs/smoke/particles_lj13_vp.yaml", "model.options.coords_range=0", "model.options"),
        ("configs/smoke/particles_lj13_vp.yaml", "model.options.lmax=2", "model.options.lmax"),  # not an EGNN's
        ("configs/smoke/qm9_flow.yaml", "model.options.lmax=2", "model.options.lmax"),  # not MolGraphNet's
        ("configs/smoke/qm9_flow.yaml", "model.layers=0", "model.layers"),
        ("configs/smoke/qm9_flow.yaml", "model.hidden=-3", "model.hidden"),
        ("configs/smoke/qm9_edm.yaml", "model.hidden=0", "model.hidden"),
    ]:
        if Path(path).is_file():
            assert _error(path, [override]).startswith(f"{key}:"), path


def test_edm_recipe_validates_and_builds():
    """EDM's recipe on the toy: x0 prediction, preconditioning, log-normal noise levels, EDM weighting, Karras grid
    and Heun with churn -- a consistent config loads; the preconditioning reaches the task's denoiser."""
    cfg = load_config(VP_SMOKE, ["precond.kind=edm", "precond.sigma_data=2.0", "model.prediction=x0",
                                 "loss.time_distribution=lognormal", "loss.weighting=edm", "sampler.spacing=karras",
                                 "sampler.name=heun_churn", "sampler.s_churn=10"])
    from moldiff.tasks import get_task

    task = get_task("toy2d")(cfg)
    with torch.random.fork_rng():
        den = task.denoiser(task.build_model())
    assert den.precond is not None and den.precond.sigma_data == 2.0 and den.kind == "x0"
    assert cfg.sampler.arguments()["s_churn"] == 10.0
    msg = _error(VP_SMOKE, ["process.kind=flow", "model.prediction=velocity", "sampler.name=heun_churn"])
    assert msg.startswith("sampler.name:")
