"""Fuzzing config loading (YAML files and ``--set`` overrides): every input gives a validated config or fails with
:class:`~moldiff.config.ConfigError`; no other exception escapes, nothing is written."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import yaml
from hypothesis import strategies as st

from moldiff.config import ConfigError, flatten
from moldiff.loading import load_config, read_yaml

from .fuzz import fuzz_tests, not_from_memory

ROOT = Path(__file__).resolve().parents[1]
BASES = sorted((ROOT / "configs" / "smoke").glob("*.yaml"))  # every task's smoke config
KEYS = sorted({k for b in BASES for k in flatten(read_yaml(b))} | {"train.lr", "model.depth", "flow.w_pos", "task"})
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.lists(st.one_of(st.integers(-5, 5), st.floats(-1e3, 1e3), st.text(max_size=3)), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2), st.sampled_from(["vp", "flow", "ddpm", "mask",
                                                                                      "uniform", "beta", "edm", "eps"]),
)
VALUE_TEXT = st.one_of(st.text(max_size=15), st.sampled_from(["1e-4", "[1, 2", "{a: 1}", "null", "-0", ".inf", "!!python/object:os.system",
                                                              "&a [*a]", "'x'", "1_000", "0x10", "yes"]))


def _set(data: dict, key: str, value):
    node = data
    parts = key.split(".")
    for p in parts[:-1]:
        nxt = node.get(p) if isinstance(node, dict) else None
        if not isinstance(nxt, dict):
            nxt = node[p] = {}
        node = nxt
    node[parts[-1]] = value
    return data


EDITS = st.lists(st.tuples(st.sampled_from(KEYS + ["bogus.key", "train", "model"]), VALUES), min_size=1, max_size=4)
YAML_FILES = st.one_of(
    st.tuples(st.sampled_from(BASES), EDITS).map(
        lambda t: yaml.safe_dump(_apply(copy.deepcopy(read_yaml(t[0])), t[1]), allow_unicode=True)),
    st.text(max_size=200),
    st.sampled_from(["task: toy2d\ntrain: {steps: [1, 2\n", "a: &x [*x]\n", "task: !!python/object:os.system x\n",
                     "- 1\n- 2\n", "task: toy2d\ntask: qm9\n", "\ttask: toy2d\n"]),
)


def _apply(data: dict, edits) -> dict:
    for key, value in edits:
        _set(data, key, value)
    return data


def _check_file(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cfg.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_config(path)
        except ConfigError as error:
            not_from_memory(error)
            pass
        assert [p.name for p in Path(tmp).iterdir()] == ["cfg.yaml"]


OVERRIDES = st.lists(st.one_of(st.tuples(st.sampled_from(KEYS + ["x.y", ""]), VALUE_TEXT).map("=".join),
                               st.text(max_size=20)), min_size=1, max_size=3)


def _check_overrides(case) -> None:
    base, overrides = case
    try:
        load_config(base, overrides)
    except ConfigError as error:
        not_from_memory(error)
        pass


test_config_files, test_config_files_slow = fuzz_tests(YAML_FILES, _check_file)
test_config_overrides, test_config_overrides_slow = fuzz_tests(st.tuples(st.sampled_from(BASES), OVERRIDES),
                                                               _check_overrides)
