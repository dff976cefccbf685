"""Shared distribution metrics on known answers."""

import pytest
import torch

from moldiff.metrics import count_outliers


def test_count_outliers_on_a_hand_made_set():
    ref = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    samples = torch.tensor([[0.1, 0.1], [0.5, 0.5], [3.0, 0.0], [0.0, -2.5], [float("nan"), 0.0]])
    # distances to the nearest reference point: 0.14, 0.71, 2.0, 2.5, nan (non-finite counts as an outlier)
    assert count_outliers(samples, ref, 1.0) == 3
    assert count_outliers(samples, ref, 2.2) == 2
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        count_outliers(torch.zeros(3, 3), ref, 1.0)
