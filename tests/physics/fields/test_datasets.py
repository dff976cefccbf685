"""Trajectory datasets: seeded, cached with a checksum, rebuilt when corrupt, disjoint splits."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from physics.fields.datasets import DatasetSpec, cache_path, get_dataset, load_trajectories, normalization, state_shape

SPEC = DatasetSpec("lorenz96", 0.05, 2.0, {"train": (6, 10), "valid": (2, 10), "test": (3, 12)})


def test_build_cache_and_reload(tmp_path):
    a = load_trajectories("lorenz96", "train", cache_dir=tmp_path, spec=SPEC, progress=False)
    assert a.shape == (6, 10, 40) and a.dtype == torch.float32
    path = cache_path("lorenz96", "train", cache_dir=tmp_path, spec=SPEC)
    assert path.is_file()
    mtime = path.stat().st_mtime_ns
    b = load_trajectories("lorenz96", "train", cache_dir=tmp_path, spec=SPEC, progress=False)
    assert torch.equal(a, b) and path.stat().st_mtime_ns == mtime  # read, not rebuilt


def test_states_follow_the_dynamics_and_splits_differ(tmp_path):
    from physics.fields.lorenz import get_lorenz

    x = load_trajectories("lorenz96", "test", cache_dir=tmp_path, spec=SPEC, progress=False).double()
    step = get_lorenz("lorenz96").advance(x[:, :-1], 0.05)
    assert (step - x[:, 1:]).abs().max() < 1e-3  # float32 storage of float64 integration
    tr = load_trajectories("lorenz96", "train", cache_dir=tmp_path, spec=SPEC, progress=False)
    assert not any(torch.allclose(tr[i, 0], x[j, 0].float()) for i in range(len(tr)) for j in range(len(x)))


def test_corrupt_cache_is_rebuilt_with_a_warning(tmp_path):
    a = load_trajectories("lorenz96", "valid", cache_dir=tmp_path, spec=SPEC, progress=False)
    path = cache_path("lorenz96", "valid", cache_dir=tmp_path, spec=SPEC)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(UserWarning, match="unusable"):
        b = load_trajectories("lorenz96", "valid", cache_dir=tmp_path, spec=SPEC, progress=False)
    assert torch.equal(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_trajectories("lorenz96", "valid", cache_dir=tmp_path, spec=SPEC, progress=False)


def test_another_spec_is_another_file(tmp_path):
    other = DatasetSpec("lorenz96", 0.05, 3.0, SPEC.sizes)
    assert cache_path("lorenz96", "train", cache_dir=tmp_path, spec=other) != cache_path(
        "lorenz96", "train", cache_dir=tmp_path, spec=SPEC)


def test_unwritable_cache_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="MOLDIFF_CACHE"):
        load_trajectories("lorenz96", "test", cache_dir=blocker / "sub", spec=SPEC, progress=False)


def test_lookup_errors_and_shapes():
    with pytest.raises(ValueError, match="unknown system"):
        get_dataset("lorenz84")
    with pytest.raises(ValueError, match="size"):
        get_dataset("lorenz63", "huge")
    with pytest.raises(ValueError, match="unknown split"):
        load_trajectories("lorenz96", "dev", spec=SPEC)
    assert state_shape(get_dataset("kolmogorov")) == (64, 64)
    assert state_shape(get_dataset("kolmogorov", "smoke")) == (32, 32)
    assert state_shape(get_dataset("lorenz63")) == (3,)


def test_normalization_per_variable_or_scalar():
    x = torch.tensor(np.random.default_rng(0).normal([0.0, 5.0, 20.0], [1.0, 2.0, 3.0], size=(50, 40, 3)),
                     dtype=torch.float32)
    mean, std = normalization("lorenz63", x)
    assert mean.shape == (3,) and torch.allclose(std, torch.tensor([1.0, 2.0, 3.0]), rtol=0.05)
    mean, std = normalization("lorenz96", x)
    assert mean.shape == (1,)


def test_simulator_with_a_wrong_model_parameter():
    """``simulator(spec, forcing=7.0)``: Lorenz-96 with another forcing (model-error studies); the default is the
    registered system itself, and a parameter the system does not have is named."""
    from physics.fields.datasets import simulator
    from physics.fields.lorenz import lorenz96

    spec = get_dataset("lorenz96")
    x = torch.randn(2, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(simulator(spec, forcing=7.0).rhs(x), lorenz96(x, forcing=7.0))
    assert simulator(spec) is simulator(spec) and dict(simulator(spec).params)["forcing"] == 8.0
    with pytest.raises(ValueError, match="no parameter 'rho'"):
        simulator(spec, rho=30.0)
    with pytest.raises(ValueError, match="no model parameters"):
        simulator(get_dataset("kolmogorov"), forcing=1.0)


def test_simulating_on_a_named_device_is_the_default_on_the_cpu(tmp_path):
    """``device=`` only moves the integration (initial conditions are drawn on the CPU): on the CPU it is the default."""
    spec = get_dataset("kolmogorov", "smoke")
    a = load_trajectories("kolmogorov", "test", cache_dir=tmp_path / "a", spec=spec, progress=False)
    b = load_trajectories("kolmogorov", "test", cache_dir=tmp_path / "b", spec=spec, progress=False, device="cpu")
    torch.testing.assert_close(a, b, rtol=0, atol=0)
