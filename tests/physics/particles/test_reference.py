import os
import re

import numpy as np
import pytest
import torch

from physics.particles import reference as ref
from physics.particles.energies import SYSTEMS, get_system, pairwise_distances
from physics.particles.reference import (
    RECIPES,
    SPLITS,
    ReferenceCacheError,
    ReferenceRecipe,
    cache_path,
    distance_histogram,
    load_reference,
    reference_info,
    reference_samples,
    sanity_figure,
)

TINY_DW4 = ReferenceRecipe("dw4", sizes=(60, 30, 30), samples_per_chain=(10, 5, 5), burn_in=100, thin=5,
                           step_size=0.02, seed_offset=7000, init="gaussian", init_scale=2.0, trace_chains=4)
TINY_LJ13 = ReferenceRecipe("lj13", sizes=(20, 10, 10), samples_per_chain=(5, 5, 5), burn_in=60, thin=2,
                            step_size=1e-3, seed_offset=7100, init="ball", init_scale=0.7, minimize_steps=50,
                            trace_chains=2)


def test_recipes_cover_systems_with_independent_seeds():
    assert set(SYSTEMS) <= set(RECIPES)
    seeds = [r.seed(s) for r in RECIPES.values() for s in SPLITS]
    assert len(set(seeds)) == len(seeds)
    for name, r in RECIPES.items():
        assert get_system(r.system).name == name
        assert len({r.split_hash(s) for s in SPLITS}) == 3
        assert r.size("train") >= r.size("val") == r.size("test")
    assert RECIPES["dw4"].size("train") == 100_000 and RECIPES["lj13"].size("val") == 10_000
    with pytest.raises(ValueError, match="train"):
        RECIPES["dw4"].size("validation")


def test_build_reload_and_contents(tmp_path, monkeypatch):
    x = reference_samples("dw4", "train", cache_dir=tmp_path, recipe=TINY_DW4, progress=False)
    assert x.shape == (60, 4, 2) and x.dtype == torch.float32
    assert x.mean(1).abs().max() < 1e-5
    path = cache_path("dw4", "train", cache_dir=tmp_path, recipe=TINY_DW4)
    assert path.is_file() and re.fullmatch(r"dw4_train_[0-9a-f]{12}\.npz", path.name)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    data = load_reference("dw4", "train", cache_dir=tmp_path, recipe=TINY_DW4)
    np.testing.assert_allclose(data.energies, SYSTEMS["dw4"].energy(x.double()).numpy(), rtol=1e-12)
    assert data.arrays["chain_energies"].shape == (6, 10) and data.arrays["acceptance"].shape == (6,)
    assert data.arrays["energy_trace"].shape == (4, 100 + 10 * 5)
    # sample-major: the first rows are the first kept state of every chain
    np.testing.assert_allclose(data.energies[:6], data.arrays["chain_energies"][:, 0], rtol=1e-4, atol=1e-4)

    # reloading reads the file and does not sample again
    def boom(*a, **k):
        raise AssertionError("rebuilt a valid cache")

    monkeypatch.setattr(ref, "_build", boom)
    y = reference_samples("dw4", "train", cache_dir=tmp_path, recipe=TINY_DW4, progress=False)
    assert torch.equal(x, y)
    assert torch.equal(reference_samples("dw4", "train", cache_dir=tmp_path, recipe=TINY_DW4, n=7), x[:7])
    with pytest.raises(ValueError, match="60"):
        reference_samples("dw4", "train", cache_dir=tmp_path, recipe=TINY_DW4, n=61)


def test_corrupt_or_foreign_cache_is_rebuilt(tmp_path):
    x = reference_samples("dw4", "val", cache_dir=tmp_path, recipe=TINY_DW4, progress=False)
    path = cache_path("dw4", "val", cache_dir=tmp_path, recipe=TINY_DW4)
    path.write_bytes(path.read_bytes()[:500])  # truncated
    with pytest.warns(UserWarning, match="unusable"):
        y = reference_samples("dw4", "val", cache_dir=tmp_path, recipe=TINY_DW4, progress=False)
    assert torch.equal(x, y)  # rebuilt from the same seed: identical
    # a valid file made by another recipe, under this recipe's name
    other = ReferenceRecipe(**{**TINY_DW4.__dict__, "burn_in": 50})
    reference_samples("dw4", "val", cache_dir=tmp_path, recipe=other, progress=False)
    other_path = cache_path("dw4", "val", cache_dir=tmp_path, recipe=other)
    assert other_path != path
    os.replace(other_path, path)
    with pytest.warns(UserWarning, match="different recipe"):
        z = reference_samples("dw4", "val", cache_dir=tmp_path, recipe=TINY_DW4, progress=False)
    assert torch.equal(x, z)


def test_tampered_arrays_fail_the_checksum(tmp_path):
    reference_samples("dw4", "test", cache_dir=tmp_path, recipe=TINY_DW4, progress=False)
    path = cache_path("dw4", "test", cache_dir=tmp_path, recipe=TINY_DW4)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["samples"] = arrays["samples"] + 1e-3
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.warns(UserWarning, match="checksum"):
        reference_samples("dw4", "test", cache_dir=tmp_path, recipe=TINY_DW4, progress=False)


def test_splits_are_independent_draws(tmp_path):
    xs = {s: reference_samples("dw4", s, cache_dir=tmp_path, recipe=TINY_DW4, progress=False) for s in SPLITS}
    assert xs["train"].shape[0] == 60 and xs["val"].shape[0] == xs["test"].shape[0] == 30
    assert not torch.allclose(xs["val"], xs["test"])
    assert not torch.allclose(xs["train"][:30], xs["val"])
    seeds = {reference_info("dw4", s, cache_dir=tmp_path, recipe=TINY_DW4)["seed"] for s in SPLITS}
    assert seeds == {7000, 7001, 7002}


def test_reference_info_and_env_cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MOLDIFF_CACHE", str(tmp_path))
    info = reference_info("lj13", "val", recipe=TINY_LJ13, progress=False)
    assert info["path"].startswith(str(tmp_path / "particles"))
    for key in ("n", "chains", "burn_in", "thin", "acceptance", "mean_energy", "std_energy", "sem_energy",
                "tau_int_steps", "tau_batch_steps", "ess", "wall_time", "first_half_mean", "second_half_mean",
                "half_drift"):
        assert key in info, key
    assert info["n"] == 10 and info["chains"] == 2 and info["burn_in"] == 60 and info["thin"] == 2
    assert 0 < info["acceptance"] <= 1 and info["wall_time"] > 0 and info["std_energy"] > 0
    x = reference_samples("lj13", "val", recipe=TINY_LJ13, progress=False)
    assert x.shape == (10, 13, 3)
    assert pairwise_distances(x).min() > 0.6  # relaxed start: no overlapping particles


def test_unwritable_cache_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ReferenceCacheError, match="MOLDIFF_CACHE"):
        reference_samples("dw4", "val", cache_dir=blocker / "particles", recipe=TINY_DW4, progress=False)


def test_recipe_must_match_system(tmp_path):
    with pytest.raises(ValueError, match="recipe"):
        reference_samples("lj13", "val", cache_dir=tmp_path, recipe=TINY_DW4, progress=False)
    with pytest.raises(ValueError, match="split"):
        reference_samples("dw4", "holdout", cache_dir=tmp_path, recipe=TINY_DW4, progress=False)
    with pytest.raises(ValueError, match="init"):
        ReferenceRecipe("dw4", (1, 1, 1), (1, 1, 1), 0, 1, 0.1, 0, init="lattice")


def test_distance_histogram_and_sanity_figure(tmp_path):
    x = torch.randn(50, 4, 2, generator=torch.Generator().manual_seed(0))
    edges, dens = distance_histogram(x, bins=20, r_max=10.0)
    assert edges.shape == (21,) and dens.shape == (20,)
    assert np.sum(dens * np.diff(edges)) == pytest.approx(1.0)
    fig = sanity_figure("dw4", cache_dir=tmp_path, recipe=TINY_DW4, progress=False)
    assert len(fig.axes) == 3
    fig.savefig(tmp_path / "sanity.png", dpi=40)
    assert (tmp_path / "sanity.png").stat().st_size > 0
