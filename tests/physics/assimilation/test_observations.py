"""Observation operators: each kind against a hand computation, the matrix form against the function form."""

from __future__ import annotations

import pytest
import torch

from physics.assimilation.observations import ObservationOperator, observe

D = torch.float64


def _traj(shape, length=7, b=2, seed=0):
    return torch.randn(b, length, *shape, generator=torch.Generator().manual_seed(seed), dtype=D)


def test_subsample_in_time_and_space_on_vectors():
    op = ObservationOperator((40,), kind="subsample", every=4, offset=1, stride=4)
    x = _traj((40,), length=10)
    y = op(x)
    assert op.times(10) == [1, 5, 9]
    assert op.per_state == 10
    assert torch.equal(op.split(y), x[:, 1::4, ::4])


def test_coarsen_fields_is_block_average():
    op = ObservationOperator((8, 8), kind="coarsen", factor=4, every=2)
    x = _traj((8, 8), length=5)
    y = op.split(op(x))  # [B, 3, 4]
    want = x[:, ::2].reshape(2, 3, 2, 4, 2, 4).mean((3, 5)).reshape(2, 3, 4)
    assert torch.allclose(y, want)


def test_subsample_fields_takes_a_lattice():
    op = ObservationOperator((8, 8), kind="subsample", stride=2)
    x = _traj((8, 8), length=3)
    assert torch.equal(op.split(op(x)), x[:, :, ::2, ::2].reshape(2, 3, 16))
    assert int(op.observed_mask().sum()) == 16


def test_mask_is_seeded_and_has_the_fraction():
    a = ObservationOperator((16, 16), kind="mask", fraction=0.25, seed=3)
    b = ObservationOperator((16, 16), kind="mask", fraction=0.25, seed=3)
    c = ObservationOperator((16, 16), kind="mask", fraction=0.25, seed=4)
    assert a.per_state == 64
    assert torch.equal(a.matrix(), b.matrix()) and not torch.equal(a.matrix(), c.matrix())
    x = _traj((16, 16), length=2)
    assert torch.equal(a.split(a(x))[:, 0], x[:, 0].flatten(1)[:, a.observed_mask().flatten()])


def test_full_is_identity_and_differentiable():
    op = ObservationOperator((3,))
    x = _traj((3,), length=4).requires_grad_(True)
    y = op(x)
    assert torch.equal(y, x.detach().flatten(1))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_observe_adds_seeded_noise_of_the_given_std():
    op = ObservationOperator((40,), kind="subsample", stride=2)
    x = torch.zeros(200, 50, 40, dtype=D)
    y1 = observe(x, op, 0.7, torch.Generator().manual_seed(0))
    y2 = observe(x, op, 0.7, torch.Generator().manual_seed(0))
    assert torch.equal(y1, y2)
    assert abs(float(y1.std()) - 0.7) < 0.01


@pytest.mark.parametrize("kwargs,match", [
    ({"kind": "blur"}, "unknown observation kind"),
    ({"kind": "coarsen", "factor": 3}, "must divide"),
    ({"kind": "mask", "fraction": 0.0}, "fraction"),
    ({"every": 0}, "every >= 1"),
])
def test_bad_operators_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ObservationOperator((8, 8), **kwargs)


def test_wrong_shapes_raise():
    op = ObservationOperator((8, 8), offset=5)
    with pytest.raises(ValueError, match="expected trajectories"):
        op(torch.zeros(2, 3, 8))
    with pytest.raises(ValueError, match="no state"):
        op(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="noise_std"):
        observe(torch.zeros(1, 6, 8, 8), op, 0.0, torch.Generator())


def test_arctan_transform_after_the_linear_map():
    op = ObservationOperator((6,), kind="subsample", stride=2, every=2, transform="arctan")
    x = _traj((6,), length=5) * 10
    assert torch.equal(op(x), torch.atan(x[:, ::2, ::2]).flatten(1))
    assert op.obs_fn is torch.atan and ObservationOperator((6,)).obs_fn is None
    with pytest.raises(ValueError, match="unknown observation transform"):
        ObservationOperator((6,), transform="square")
