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


def test_import_graph_counts_circles_upward_arrows_and_function_imports(tmp_path):
    from benchmarks.import_graph import measure

    files = {
        "moldiff/__init__.py": "",
        "moldiff/a.py": "from . import b\n",
        "moldiff/b.py": "def f():\n    from .a import g  # lazy\n",
        "moldiff/c.py": "from moldiff.molecules import x\n",
        "moldiff/molecules/__init__.py": "",
        "moldiff/molecules/x.py": "import moldiff.a\n",
        "moldiff/diffusion/__init__.py": "",
        "moldiff/diffusion/d.py": "import mlflow\n",
        "physics/__init__.py": "",
        "physics/p.py": "from moldiff.molecules.x import y\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    rec = measure(tmp_path)
    assert rec["modules"] == 10  # packages count as their __init__
    assert rec["circles"] == 0 and rec["circles_with_function_imports"] == 1  # a -> b at import, b -> a in f
    assert rec["circle_examples_with_function_imports"] == [["moldiff.a", "moldiff.b"]]
    assert rec["function_level_own_imports"] == 1
    assert rec["upward_by_contract"] == {"core -> domain": 1, "diffusion -> training/MLflow/RDKit": 1,
                                         "physics -> molecules": 1}
