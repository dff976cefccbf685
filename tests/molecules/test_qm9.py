"""QM9 from qm9pack: counts, EDM's split, the cache (checksum, corruption -> rebuild), batches."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from moldiff.molecules.batches import batch_rows, epoch_batches
from moldiff.molecules.qm9 import NUM_MOLECULES, QM9, SPLIT_SIZES, edm_split_indices

# EDM's published training-split atom-count histogram (configs/datasets_config.py, qm9_with_h 'n_nodes')
EDM_TRAIN_HISTOGRAM = {22: 3393, 17: 13025, 23: 4848, 21: 9970, 19: 13832, 20: 9482, 16: 10644, 13: 3060,
                       15: 7796, 25: 1506, 18: 13364, 12: 1689, 11: 807, 24: 539, 14: 5136, 26: 48, 7: 16,
                       10: 362, 8: 49, 9: 124, 27: 266, 4: 4, 29: 25, 6: 9, 5: 5, 3: 1}


@pytest.fixture(scope="module")
def qm9():
    return QM9.load(progress=False)


def test_counts_and_splits(qm9):
    assert len(qm9) == NUM_MOLECULES
    assert qm9.positions.dtype == np.float32 and qm9.positions.shape == (int(qm9.num_atoms.sum()), 3)
    assert np.all(np.diff(qm9.index) > 0)  # sorted by QM9 number
    sizes = {k: len(v) for k, v in qm9.splits.items()}
    assert sizes == SPLIT_SIZES
    allrows = np.concatenate(list(qm9.splits.values()))
    assert len(np.unique(allrows)) == NUM_MOLECULES
    # EDM's split reproduces EDM's published size histogram exactly
    assert qm9.size_histogram("train") == EDM_TRAIN_HISTOGRAM


def test_split_is_numpy_seed0_permutation():
    np.random.seed(0)
    perm = np.random.permutation(NUM_MOLECULES)
    s = edm_split_indices()
    assert np.array_equal(s["train"], perm[:100_000])
    assert np.array_equal(s["test"], perm[100_000 + 17_748 :])


def test_molecule_contents(qm9):
    methane = qm9.molecule(0)  # dsgdb9nsd_000001: CH4
    assert qm9.index[0] == 1 and qm9.smiles[0] == "C"
    assert methane.atomic_numbers.tolist() == [6, 1, 1, 1, 1]
    d = np.linalg.norm(methane.positions[1:] - methane.positions[0], axis=1)
    np.testing.assert_allclose(d, 1.0919, atol=2e-3)  # B3LYP C-H bond
    assert set(np.unique(qm9.atomic_numbers).tolist()) == {1, 6, 7, 8, 9}
    assert np.isfinite(qm9.property("gap")).all() and abs(qm9.property("gap")[0] - 0.5048) < 1e-9
    data = qm9.to_pyg(0)
    assert data.z.tolist() == [6, 1, 1, 1, 1] and data.y.shape == (1, 15)


def test_gather_matches_molecules(qm9):
    rows = np.array([5, 0, 1234])
    z, pos, graph = qm9.gather(rows)
    for g, (zz, pp) in enumerate(qm9.molecules(rows)):
        assert np.array_equal(z[graph == g], zz) and np.array_equal(pos[graph == g], pp)


def test_corrupt_cache_is_rebuilt(qm9, tmp_path):
    shutil.copy(qm9.path, tmp_path / "qm9.npz")
    with open(tmp_path / "qm9.npz", "r+b") as f:  # flip bytes inside the positions
        f.seek(qm9.path.stat().st_size // 2)
        f.write(b"\x00garbage\x00" * 8)
    with pytest.warns(UserWarning, match="unusable"):
        again = QM9.load(tmp_path, progress=False)
    assert again.checksum == qm9.checksum
    assert QM9.load(tmp_path, progress=False).checksum == qm9.checksum  # the rebuilt cache is good


def test_batches_are_a_pure_function_of_step(qm9):
    sizes = qm9.num_atoms[qm9.split("train")[:640]]
    a = batch_rows(sizes, 32, seed=3, step=7, rank=0, world_size=1, bucket_batches=4)
    b = batch_rows(sizes, 32, seed=3, step=7, rank=0, world_size=1, bucket_batches=4)
    assert np.array_equal(a, b)
    epoch = epoch_batches(sizes, 32, 3, 0, 4)
    assert sorted(np.concatenate(epoch).tolist()) == list(range(640))  # each molecule once per epoch
    # bucketing: batches are narrower in size than random ones
    spread = np.mean([np.ptp(sizes[r]) for r in epoch])
    random_spread = np.mean([np.ptp(sizes[r]) for r in epoch_batches(sizes, 32, 3, 0, 1)])
    assert spread < 0.5 * random_spread
    # ranks see disjoint batches at the same step
    r0 = batch_rows(sizes, 32, 3, 5, 0, 2, 4)
    r1 = batch_rows(sizes, 32, 3, 5, 1, 2, 4)
    assert not set(r0) & set(r1)


def test_missing_qm9pack_is_a_clear_error(monkeypatch, tmp_path):
    import importlib.util

    from moldiff.molecules import qm9 as mod

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "qm9pack" else real(name, *a))
    with pytest.raises(mod.QM9CacheError, match="pip install qm9pack"):
        mod.QM9.load(tmp_path, progress=False)
    assert not list(tmp_path.iterdir())  # nothing half-written
