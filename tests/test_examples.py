"""Every example runs (in a tiny setting), and examples/README.md lists each."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_ARGS = {
    "gaussian_samplers.py": [],
    "toy2d_score_sde.py": ["--steps", "100", "--tiny"],
    "qm9_edm.py": ["--steps", "20", "--tiny"],
    "qm9_flow.py": ["--steps", "10", "--tiny"],
    "particles_flow_matching.py": ["--steps", "30", "--tiny"],
    "assimilation_lorenz.py": ["--steps", "40", "--tiny"],
    "inpainting_lorenz96.py": ["--tiny"],
    "toy2d_guidance.py": ["--steps", "100", "--tiny"],
    "scaffold_completion.py": ["--tiny"],
    "custom_backbone.py": ["--tiny"],
    "qm9_property.py": ["--tiny"],
    "unbiased_samples.py": ["--tiny"],
    "latent_assimilation.py": ["--tiny"],
    "kolmogorov_pretrained.py": ["--tiny"],
}


def test_every_example_is_listed():
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(TINY_ARGS)


@pytest.mark.parametrize("script", sorted(TINY_ARGS))
def test_example_runs(script, tmp_path):
    args = list(TINY_ARGS[script])
    if "--tiny" in args:
        args += ["--runs-root", str(tmp_path / "runs")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    if script == "gaussian_samplers.py":
        assert "PF-ODE log-likelihood" in out.stdout
    elif script == "qm9_edm.py":
        assert "molecule stability" in out.stdout and "QM9 training molecules" in out.stdout
        assert list((tmp_path / "runs").glob("example_qm9*.sdf"))
    elif script == "qm9_flow.py":
        assert "shipped model, 8 molecules" in out.stdout and "graph: validity" in out.stdout
        assert (tmp_path / "runs" / "example_qm9_flow_pretrained.sdf").is_file()
        assert (tmp_path / "runs" / "example_qm9_flow.png").is_file()
    elif script == "particles_flow_matching.py":
        assert "energy W1" in out.stdout and "coupling       eq_ot" in out.stdout
        assert list((tmp_path / "runs").glob("example_dw4_*.extxyz"))
        assert list((tmp_path / "runs").glob("example_dw4_*.png"))
    elif script == "assimilation_lorenz.py":
        for name in ("SDA  ", "MMPS ", "EnKS ", "iEnKS", "ETKF ", "PF   "):
            assert f"{name} RMSE" in out.stdout, out.stdout
        assert "climatology RMSE" in out.stdout
        assert (tmp_path / "runs" / "example_lorenz63_assimilation.png").is_file()
    elif script == "toy2d_guidance.py":
        assert "guidance 3: mean |angle error|" in out.stdout and "angle_error/cfg_0" in out.stdout
        assert (tmp_path / "runs" / "example_toy2d_guidance.png").is_file()
    elif script == "inpainting_lorenz96.py":
        for name in ("RePaint", "guided (SDA)", "linear interpolation", "climatology"):
            assert name in out.stdout, out.stdout
    elif script == "scaffold_completion.py":
        assert "completions of benzene" in out.stdout and "scaffold atoms kept in place: True" in out.stdout
        assert (tmp_path / "runs" / "completions.sdf").is_file() and (tmp_path / "runs" / "completions.png").is_file()
    elif script == "custom_backbone.py":
        assert "RadialNet: equivariant" in out.stdout and "DW4 with RadialNet" in out.stdout
    elif script == "unbiased_samples.py":
        assert "ESS" in out.stdout and "log Z" in out.stdout and "mean energy: reweighted" in out.stdout
        assert "mean energy: MALA 20" in out.stdout and (tmp_path / "runs" / "example_unbiased_dw4.png").is_file()
    elif script == "latent_assimilation.py":
        for name in ("autoencoder: compression 8x", "latent state (2, 8, 8)", "latent SDA: RMSE", "latent DPS: RMSE",
                     "climatology RMSE"):
            assert name in out.stdout, out.stdout
        assert (tmp_path / "runs" / "example_latent_kolmogorov.png").is_file()
    elif script == "kolmogorov_pretrained.py":
        assert "shipped prior: step" in out.stdout and "RMSE of the posterior mean" in out.stdout, out.stdout
        assert (tmp_path / "kolmogorov_pretrained.png").is_file() and (tmp_path / "kolmogorov_pretrained.gif").is_file()
    elif script == "qm9_property.py":
        for name in ("shuffled properties", "#atoms only", "generated", "lower bound"):
            assert name in out.stdout, out.stdout
    else:
        assert "W2 to held-out data" in out.stdout
        assert list((tmp_path / "runs").glob("example_*.png"))


def test_the_examples_readme_lists_every_example():
    listed = set(re.findall(r"^\| `(\w+\.py)` \|", (ROOT / "examples" / "README.md").read_text(), re.M))
    assert listed == {p.name for p in (ROOT / "examples").glob("*.py")}
