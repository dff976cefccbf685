"""Sampling batches by size: a partition of the molecules, within the batch size, with bounded padding."""

import numpy as np
import pytest

from moldiff.molecules.batches import size_groups


@pytest.mark.parametrize("batch_size, waste", [(250, 0.2), (7, 0.2), (1000, 0.0), (3, 1.0)])
def test_size_groups_partition_the_molecules_with_bounded_padding(batch_size, waste):
    sizes = np.random.default_rng(0).integers(3, 30, 500)
    groups = size_groups(sizes, batch_size, waste)
    flat = np.concatenate(groups)
    assert sorted(flat.tolist()) == list(range(500))  # every molecule once
    for g in groups:
        n = sizes[g]
        assert 1 <= len(g) <= batch_size and (np.diff(n) >= 0).all()
        assert len(g) * n.max() ** 2 <= (1 + waste) * (n**2).sum() + 1e-9
    if waste == 0.0:  # no padding at all: one size per batch
        assert all(len(set(sizes[g].tolist())) == 1 for g in groups)


def test_size_groups_refuses_an_empty_batch():
    with pytest.raises(ValueError, match="batch_size"):
        size_groups(np.array([3, 4]), 0)
