"""The layering of DESIGN.md, enforced: the import-linter contracts in pyproject.toml (the core imports no domain,
diffusion neither training, MLflow nor RDKit, nn no sampler, physics not the molecule plugin) all hold."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_import_contracts_hold():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).is_file():
        pytest.fail("lint-imports is missing: install the test extras (pip install -e '.[test]')")
    res = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "broken" not in res.stdout.split("Contracts:")[-1].replace("0 broken", "")
