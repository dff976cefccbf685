"""check_finite walks the shapes samples come in: tensors, arrays, lists of (z, pos) tuples, dataclasses."""

import numpy as np
import pytest
import torch

from moldiff.errors import NonFiniteError, check_finite
from moldiff.molecules.graph_mol import GraphMolecule


def _graph(pos):
    return GraphMolecule(np.array([6, 1]), np.zeros(2, dtype=np.int64), np.asarray(pos, dtype=np.float64),
                         np.zeros((0, 3), dtype=np.int64))


@pytest.mark.parametrize("good", [
    torch.zeros(3, 2), np.ones(4), [(np.array([6]), np.zeros((1, 3)))], [_graph([[0, 0, 0], [1, 0, 0]])],
    {"a": 1.0, "b": [torch.arange(3)]}, "text", None, torch.tensor([1, 2]),
])
def test_finite_things_pass(good):
    check_finite(good, "the samples")


@pytest.mark.parametrize("bad, where", [
    (torch.tensor([0.0, float("nan")]), "the samples"),
    (np.array([np.inf]), "the samples"),
    ([(np.array([6]), np.zeros((1, 3))), (np.array([6]), np.full((1, 3), np.nan))], "the samples[1][1]"),
    ([_graph([[0, 0, 0], [np.nan, 0, 0]])], "the samples[0].positions"),
    ({"x": float("inf")}, "the samples['x']"),
])
def test_the_first_nonfinite_value_is_located(bad, where):
    with pytest.raises(NonFiniteError) as e:
        check_finite(bad, "the samples")
    assert where in str(e.value)
