"""Discrete flow matching: the path's marginals, and the reverse chain with the exact posterior recovers the
data distribution (a toy with a known answer)."""

from __future__ import annotations

import itertools

import pytest
import torch

from moldiff.diffusion import CategoricalPath, flow_time_grid

P_DATA = torch.tensor([0.5, 0.3, 0.15, 0.05])


def test_marginal_is_the_mixture_and_corrupt_draws_from_it():
    g = torch.Generator().manual_seed(0)
    for prior in ("mask", "uniform"):
        path = CategoricalPath(4, prior)
        x0 = torch.full((200_000,), 2, dtype=torch.long)
        t = 0.3
        m = path.marginal(x0[:1], torch.tensor(t))[0]
        expect = torch.zeros(path.num_states)
        expect[2] = 0.7
        if prior == "mask":
            expect[4] = 0.3
        else:
            expect += 0.3 / 4
        torch.testing.assert_close(m, expect)
        xt = path.corrupt(x0, torch.tensor(t), generator=g)
        freq = torch.bincount(xt, minlength=path.num_states).float() / len(xt)
        assert (freq - expect).abs().max() < 5e-3


def _posterior_single(path: CategoricalPath, xt: torch.Tensor, t: float) -> torch.Tensor:
    """Exact p(x0 | x_t) for one token with data distribution P_DATA: [B, K]."""
    lik = path.marginal(torch.arange(4), torch.tensor(t))[:, xt].T  # [B, K] = p_t(x_t | x0 = k)
    post = lik * P_DATA
    return post / post.sum(-1, keepdim=True)


@pytest.mark.parametrize("prior,steps,tol", [("mask", 1, 6e-3), ("mask", 5, 6e-3), ("uniform", 1, 6e-3),
                                             ("uniform", 200, 1.5e-2)])
def test_reverse_chain_with_the_exact_posterior_recovers_the_data(prior, steps, tol):
    """Mask: exact at any step count for one token; uniform: exact in one step from t = 1 and converging
    as the steps shrink."""
    g = torch.Generator().manual_seed(1)
    path = CategoricalPath(4, prior)
    x = path.prior_sample((100_000,), generator=g)
    ts = flow_time_grid(steps)
    for i in range(steps):
        t, s = float(ts[i]), float(ts[i + 1])
        x = path.step(x, _posterior_single(path, x, t), t, s, generator=g)
    assert x.max() < 4  # every token ends on a data class
    freq = torch.bincount(x, minlength=4).float() / len(x)
    assert (freq - P_DATA).abs().max() < tol, freq


def test_two_correlated_tokens_mask_chain():
    """Two tokens with a joint distribution: the factorised chain with the exact per-token posteriors given
    the current pair recovers the joint (tokens are revealed one at a time with small steps)."""
    joint = torch.tensor([[0.4, 0.0, 0.1], [0.0, 0.3, 0.0], [0.05, 0.0, 0.15]])  # p(a, b), K = 3
    path = CategoricalPath(3, "mask")
    g = torch.Generator().manual_seed(2)
    n, steps = 60_000, 100
    x = path.prior_sample((n, 2), generator=g)
    ts = flow_time_grid(steps)
    for i in range(steps):
        t, s = float(ts[i]), float(ts[i + 1])
        probs = torch.empty(n, 2, 3)
        for tok in (0, 1):
            other = x[:, 1 - tok]
            table = joint if tok == 0 else joint.T  # [this, other]
            known = other < 3
            cond = torch.where(known[:, None], table[:, other.clamp(max=2)].T, table.sum(1).expand(n, 3))
            probs[:, tok] = cond / cond.sum(-1, keepdim=True)
        x = path.step(x, probs, t, s, generator=g)
    counts = torch.zeros(3, 3)
    for a, b in itertools.product(range(3), range(3)):
        counts[a, b] = ((x[:, 0] == a) & (x[:, 1] == b)).float().mean()
    assert (counts - joint).abs().max() < 0.02, counts


def test_loss_and_bad_arguments():
    path = CategoricalPath(3, "uniform")
    logits = torch.tensor([[10.0, -10.0, -10.0], [0.0, 0.0, 0.0]])
    loss = path.loss(logits, torch.tensor([0, 1]))
    assert loss[0] < 1e-6 and abs(loss[1] - torch.log(torch.tensor(3.0))) < 1e-6
    with pytest.raises(ValueError, match="prior"):
        CategoricalPath(3, "gaussian")
    with pytest.raises(ValueError, match="0 <= s < t <= 1"):
        path.step(torch.zeros(2, dtype=torch.long), torch.full((2, 3), 1 / 3), 0.2, 0.5)
    assert CategoricalPath(3, "mask").num_states == 4 and path.num_states == 3


def test_remasking_stochasticity_keeps_the_marginal():
    """eta > 0 re-masks revealed tokens and reveals masked ones faster: same data distribution at the end."""
    g = torch.Generator().manual_seed(4)
    path = CategoricalPath(4, "mask")
    x = path.prior_sample((100_000,))
    ts = flow_time_grid(100)
    for i in range(100):
        t, s = float(ts[i]), float(ts[i + 1])
        x = path.step(x, _posterior_single(path, x, t), t, s, eta=5.0, generator=g)
    assert x.max() < 4
    freq = torch.bincount(x, minlength=4).float() / len(x)
    assert (freq - P_DATA).abs().max() < 1e-2, freq
    with pytest.raises(ValueError, match="mask prior"):
        CategoricalPath(4, "uniform").step(x, torch.full((len(x), 4), 0.25), 0.5, 0.4, eta=1.0)
