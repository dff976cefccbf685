"""The benchmarks are a package: every script imports as ``benchmarks.NAME`` (run as ``python -m benchmarks.NAME``)
without touching ``sys.path``, and names its machine through the shared harness."""

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_benchmark_imports_as_a_module(name):
    source = (ROOT / "benchmarks" / f"{name}.py").read_text()
    assert "sys.path" not in source
    assert "def machine(" not in source or name == "harness"
    importlib.import_module(f"benchmarks.{name}")


def test_the_harness_names_the_machine():
    from benchmarks.harness import machine

    text = machine()
    assert "torch" in text and "cores" in text
