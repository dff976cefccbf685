"""The joint continuous + categorical flow sampler with exact clean-state predictions."""

from __future__ import annotations

import pytest
import torch

from moldiff.diffusion import (
    CategoricalPath,
    EuclideanSpace,
    FlowPath,
    MixedKnown,
    MixedPrediction,
    MixedState,
    PointCloudSpace,
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
    for grid in ("uniform", "cosine", "quadratic"):
        ts = flow_time_grid(10, kind=grid)
        assert ts[0] == 1 and ts[-1] == 0 and (ts[1:] < ts[:-1]).all()
        calls.clear()
        out = sample_mixed_flow(model, state, ts, path=FlowPath(), categorical={"k": CategoricalPath(3, "mask")},
                                space=EuclideanSpace(), generator=g, progress=False)
        assert len(calls) == 10
        torch.testing.assert_close(out.x, c.expand(n, 2), atol=1e-5, rtol=0)
        freq = torch.bincount(out.tokens["k"], minlength=3).float() / n
        assert (freq - p).abs().max() < 0.015


def test_quadratic_grid_steps_closer_near_the_data():
    ts = flow_time_grid(4, kind="quadratic").double()
    torch.testing.assert_close(ts, torch.tensor([1.0, 9 / 16, 4 / 16, 1 / 16, 0.0], dtype=torch.float64))


def test_a_self_conditioned_model_sees_its_own_previous_prediction():
    """With ``self_condition`` the sampler calls ``model(state, t, prev)``: ``None`` first, then exactly the
    prediction of the call before; the end point is still the exact answer (x0 = c), reached by a model that only
    knows c through its own previous estimates (it halves the distance each call)."""
    g = torch.Generator().manual_seed(0)
    c = torch.tensor([1.5, -2.0])
    seen, made = [], []

    def model(state: MixedState, t: torch.Tensor, prev: MixedPrediction | None = None) -> MixedPrediction:
        seen.append(prev)
        n = state.x.shape[0]
        x0 = torch.zeros(n, 2) if prev is None else (prev.x0 + c) / 2
        out = MixedPrediction(x0, {"k": torch.zeros(n, 2)})
        made.append(out)
        return out

    n, steps = 8, 30
    state = MixedState(torch.randn(n, 2, generator=g), {"k": CategoricalPath(2, "mask").prior_sample((n,))})
    out = sample_mixed_flow(model, state, flow_time_grid(steps), path=FlowPath(), categorical={"k": CategoricalPath(2)},
                            space=EuclideanSpace(), self_condition=True, generator=g, progress=False)
    assert seen[0] is None and all(s is m for s, m in zip(seen[1:], made[:-1])) and len(seen) == steps
    torch.testing.assert_close(out.x, c.expand(n, 2), atol=2e-8 * steps, rtol=0)  # x0_hat = c (1 - 2^-29) at the end
    seen.clear()
    sample_mixed_flow(lambda s, t: model(s, t), state, flow_time_grid(3), path=FlowPath(),
                      categorical={"k": CategoricalPath(2)}, space=EuclideanSpace(), generator=g, progress=False)
    assert seen == [None] * 3  # without self_condition the model is called as model(state, t)


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


RHO = 0.8
COV = torch.tensor([[1.0, RHO], [RHO, 1.0]], dtype=torch.float64)


def _gaussian_model(state: MixedState, t: torch.Tensor) -> MixedPrediction:
    """The exact clean-state prediction for x0 ~ N(0, COV) on the linear path: E[x0 | x_t]."""
    tt = float(t[0])
    gain = (1 - tt) * COV @ torch.linalg.inv((1 - tt) ** 2 * COV + tt**2 * torch.eye(2, dtype=torch.float64))
    return MixedPrediction(state.x @ gain.T, {"k": torch.zeros(state.x.shape[0], 1, 2, dtype=torch.float64)})


def _inpaint_gaussian(steps, noise, resample, g, n=20_000):
    state = MixedState(torch.randn(n, 2, generator=g, dtype=torch.float64), {"k": torch.full((n, 1), 2)})
    known = MixedKnown(torch.tensor([1.0, 0.0], dtype=torch.float64).expand(n, 2), torch.tensor([True, False]), {}, {})
    return sample_mixed_flow(_gaussian_model, state, flow_time_grid(steps).double(), path=FlowPath(),
                             categorical={"k": CategoricalPath(2, "mask")}, space=EuclideanSpace(), known=known,
                             noise=noise, resample=resample, generator=g, progress=False).x


def test_inpainting_matches_the_exact_gaussian_conditional():
    """x0 ~ N(0, [[1, .8], [.8, 1]]), x0[0] = 1 given: exactly x0[1] ~ N(0.8, 0.36).  Stochastic steps with 10
    resampling repeats on 100 steps reach it (mean within 0.06, std within 0.05); plain replacement on the ODE
    does not (mean 0.34): the given part is held exactly either way."""
    g = torch.Generator().manual_seed(0)
    x = _inpaint_gaussian(100, 1.0, 10, g)
    assert (x[:, 0] == 1.0).all()
    assert abs(float(x[:, 1].mean()) - RHO) < 0.06
    assert abs(float(x[:, 1].std()) - (1 - RHO**2) ** 0.5) < 0.05
    plain = _inpaint_gaussian(100, 0.0, 1, g, n=5000)
    assert abs(float(plain[:, 1].mean()) - RHO) > 0.3


def test_inpainting_two_equal_tokens_gives_the_given_value():
    """Data: two tokens, always equal, uniform over 3 classes.  With the exact posterior and the first token given
    (2), the second is 2 in every sample (without it the first token is uniform; a factorised step that reveals
    both at once may draw them unequal, which is why the given one is revealed from the start)."""
    g = torch.Generator().manual_seed(1)
    path = CategoricalPath(3, "mask")

    def model(state: MixedState, t: torch.Tensor) -> MixedPrediction:
        tok = state.tokens["k"]  # [n, 2]
        revealed = tok < 3
        partner = tok.flip(1)
        logits = torch.zeros(*tok.shape, 3)
        certain = torch.where(revealed, tok, torch.where(partner < 3, partner, torch.zeros_like(tok)))
        sure = revealed | (partner < 3)
        logits = torch.where(sure[..., None], torch.nn.functional.one_hot(certain, 3).float().log(), logits)
        return MixedPrediction(torch.zeros_like(state.x), {"k": logits})

    n = 4000
    state = MixedState(torch.zeros(n, 1), {"k": path.prior_sample((n, 2))})
    known = MixedKnown(torch.zeros(n, 1), torch.tensor([False]), {"k": torch.full((n, 2), 2)},
                       {"k": torch.tensor([True, False]).expand(n, 2)})
    out = sample_mixed_flow(model, state, flow_time_grid(20), path=FlowPath(), categorical={"k": path},
                            space=EuclideanSpace(), known=known, generator=g, progress=False)
    assert (out.tokens["k"] == 2).all()
    free = sample_mixed_flow(model, state, flow_time_grid(20), path=FlowPath(), categorical={"k": path},
                             space=EuclideanSpace(), generator=g, progress=False)
    tok = free.tokens["k"]
    assert (torch.bincount(tok[:, 0], minlength=3).float() / n - 1 / 3).abs().max() < 0.04


def test_given_atoms_of_a_point_cloud_come_back_where_they_were_given():
    """Zero-CoM clouds: the sampler keeps the given atoms' relative geometry and translates the result so they sit
    exactly at the given (not centred) positions."""
    g = torch.Generator().manual_seed(2)
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    space = PointCloudSpace(batch)
    given = torch.randn(7, 3, generator=g) + 5.0
    mask = torch.tensor([True, True, False, True, False, False, False])[:, None]

    def model(state: MixedState, t: torch.Tensor) -> MixedPrediction:
        return MixedPrediction(space.project(0.5 * state.x), {})

    out = sample_mixed_flow(model, MixedState(space.randn_like(torch.zeros(7, 3), g), {}), flow_time_grid(8),
                            path=FlowPath(), categorical={}, space=space,
                            known=MixedKnown(given, mask, {}, {}), noise=1.0, resample=2, generator=g, progress=False)
    torch.testing.assert_close(out.x[mask[:, 0]], given[mask[:, 0]])
    assert torch.isfinite(out.x).all()


def test_renoise_keeps_the_token_marginal():
    g = torch.Generator().manual_seed(3)
    for prior in ("mask", "uniform"):
        path = CategoricalPath(3, prior)
        x0 = torch.full((50_000,), 1)
        x_s = path.corrupt(x0, 0.3, generator=g)
        x_t = path.renoise(x_s, 0.3, 0.7, generator=g)
        freq = torch.bincount(x_t, minlength=path.num_states).float() / len(x0)
        torch.testing.assert_close(freq, path.marginal(x0[:1], 0.7)[0], atol=0.01, rtol=0)
    with pytest.raises(ValueError, match="renoise"):
        path.renoise(x0, 0.5, 0.5)
