"""The local score composition: which window feeds which state, and that it is exact on Markov priors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from physics.fields.models import FlatWindow, LocalScoreNet

D = torch.float64


class _Tag(nn.Module):
    """A backbone whose output at window position j is 100 * (window's first state) + j + t: it reveals which
    window and which position produced each composed state."""

    def forward(self, w, t):
        pos = torch.arange(w.shape[1], dtype=w.dtype)[None, :, None]
        return (100 * w[:, :1, :1] + pos + t[:, None, None]).expand_as(w)


def test_composition_takes_centres_head_and_tail():
    k, length = 2, 9
    x = torch.arange(length, dtype=D)[None, :, None].repeat(2, 1, 3)  # state i has value i
    out = LocalScoreNet(_Tag(), k)(x, torch.zeros(2, dtype=D))
    window_start = torch.tensor([0, 0, 0, 1, 2, 3, 4, 4, 4], dtype=D)
    position = torch.tensor([0, 1, 2, 2, 2, 2, 2, 3, 4], dtype=D)
    assert torch.equal(out[0, :, 0], 100 * window_start + position)


def _random_flat_window(g: torch.Generator) -> FlatWindow:
    """A float64 MLP backbone over 5 states of 4 variables, with non-trivial (non-zero output) weights."""
    backbone = FlatWindow(5 * 4, width=32, depth=2).double()
    for p in backbone.parameters():
        nn.init.normal_(p, std=0.2, generator=g)
    return backbone


@pytest.mark.usefixtures("global_rng")
def test_a_window_is_the_backbone_itself_and_t_is_per_trajectory():
    g = torch.Generator().manual_seed(0)
    backbone = _random_flat_window(g)
    net = LocalScoreNet(backbone, 2)
    x = torch.randn(3, 5, 4, generator=g, dtype=D)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=D)
    assert torch.allclose(net(x, t), backbone(x, t))
    long = torch.randn(3, 12, 4, generator=g, dtype=D)
    full = net(long, t)
    for b in range(3):  # each trajectory is scored with its own t
        assert torch.allclose(full[b : b + 1], net(long[b : b + 1], t[b : b + 1]))


def test_exact_for_a_gaussian_markov_chain():
    """For a stationary AR(1) chain the score of x_i depends only on x_{i-1}, x_i, x_{i+1}: a k = 1 backbone
    that returns the exact window score (with edge states treated as chain ends) composes into the exact
    score of the whole chain."""
    a, length = 0.8, 10
    prec_full = _ar1_precision(a, length)

    class ExactWindow(nn.Module):
        def forward(self, w, t):  # score of the window's own AR(1) marginal
            p = _ar1_precision(a, w.shape[1])
            return -(w[..., 0] @ p)[..., None]

    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, length, 1, generator=g, dtype=D)
    got = LocalScoreNet(ExactWindow(), 1)(x, torch.zeros(4, dtype=D))
    want = -(x[..., 0] @ prec_full)[..., None]
    # interior states are exact; the two end states too, since the first/last windows contain the chain ends
    assert torch.allclose(got, want, atol=1e-12)


def _ar1_precision(a: float, n: int) -> torch.Tensor:
    """Precision of a stationary AR(1) x_{i+1} = a x_i + sqrt(1 - a^2) e (unit marginal variance)."""
    p = torch.zeros(n, n, dtype=D)
    s = 1 - a**2
    for i in range(n):
        p[i, i] = (1 + a**2 if 0 < i < n - 1 else 1.0) / s
        if i + 1 < n:
            p[i, i + 1] = p[i + 1, i] = -a / s
    return p


def test_too_short_trajectories_raise():
    net = LocalScoreNet(_Tag(), 3)
    with pytest.raises(ValueError, match="at least 2k"):
        net(torch.zeros(1, 6, 2), torch.zeros(1))
    with pytest.raises(ValueError, match="k must be"):
        LocalScoreNet(_Tag(), -1)


@pytest.mark.usefixtures("global_rng")
def test_grouped_windows_give_the_per_window_result():
    """The grouped call (one time embedding per trajectory) equals scoring every window with its own copy of t."""
    g = torch.Generator().manual_seed(1)
    backbone = _random_flat_window(g)
    x = torch.randn(3, 12, 4, generator=g, dtype=D)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=D)
    grouped = LocalScoreNet(backbone, 2)(x, t)
    backbone.grouped = False  # the instance attribute shadows the class's: the per-window path
    flat = LocalScoreNet(backbone, 2)(x, t)
    assert torch.allclose(grouped, flat, atol=1e-10)  # batched vs single: sums in another order on some CPUs' kernels (~1e-12 in float64); bugs are >> 1e-10
