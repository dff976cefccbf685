"""The joint continuous + categorical flow sampler with exact clean-state predictions."""

from __future__ import annotations

import pytest
import torch

from moldiff.diffusion import (
    CategoricalPath,
    EuclideanSpace,
    FlowPath,
    MixedPrediction,
    MixedState,
    flow_time_grid,
    sample_mixed_flow,
)


def test_exact_endpoint_predictions_give_the_data():
    """Data: x0 = c (a point), tokens ~ p.  With x0_hat = c and logits = log p the sampler ends exactly at c
    and draws the tokens from p, with one network call per step."""
    g = torch.Generator().manual_seed(0)
    c = torch.tensor([1.5, -2.0])
    p = torch.tensor([0.7, 0.2, 0.1])
    calls = []

    def model(state: MixedState, t: torch.Tensor) -> MixedPrediction:
        calls.append(float(t[0]))
        n = state.x.shape[0]
        return MixedPrediction(c.expand(n, 2), {"k": p.log().expand(n, 3)})

    n = 20_000
    state = MixedState(torch.randn(n, 2, generator=g), {"k": CategoricalPath(3, "mask").prior_sample((n,))})
    for grid in ("uniform", "cosine"):
        ts = flow_time_grid(10, kind=grid)
        assert ts[0] == 1 and ts[-1] == 0 and (ts[1:] < ts[:-1]).all()
        calls.clear()
        out = sample_mixed_flow(model, state, ts, path=FlowPath(), categorical={"k": CategoricalPath(3, "mask")},
                                space=EuclideanSpace(), generator=g, progress=False)
        assert len(calls) == 10
        torch.testing.assert_close(out.x, c.expand(n, 2), atol=1e-5, rtol=0)
        freq = torch.bincount(out.tokens["k"], minlength=3).float() / n
        assert (freq - p).abs().max() < 0.015


def test_errors():
    with pytest.raises(ValueError, match="steps"):
        flow_time_grid(0)
    with pytest.raises(ValueError, match="grid"):
        flow_time_grid(4, kind="log")
    state = MixedState(torch.zeros(2, 2), {"a": torch.zeros(2, dtype=torch.long)})
    with pytest.raises(ValueError, match="differ"):
        sample_mixed_flow(lambda s, t: None, state, flow_time_grid(2), path=FlowPath(),
                          categorical={"b": CategoricalPath(2)}, space=EuclideanSpace(), progress=False)
    with pytest.raises(ValueError, match="sigma"):
        sample_mixed_flow(lambda s, t: None, state, flow_time_grid(2), path=FlowPath(sigma=0.1),
                          categorical={"a": CategoricalPath(2)}, space=EuclideanSpace(), progress=False)
