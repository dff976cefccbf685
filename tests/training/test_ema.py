"""EMA warm-up: the average forgets the initial network at a rate that does not depend on ``decay``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from moldiff.training.ema import EMA

pytestmark = pytest.mark.usefixtures("global_rng")


def test_warmup_schedule_and_gate():
    ema = EMA(nn.Linear(1, 1), decay=0.999)
    assert ema.decay_at(0) == 0.1 and abs(ema.decay_at(90) - 0.91) < 1e-12
    assert ema.decay_at(10**6) == 0.999 and ema.decay_at(None) == 0.999


def test_initial_weight_decays_like_the_warmup_product():
    """After n steps with the parameter held at 1 (shadow started at 0) the shadow is 1 - prod_k d_k; with
    d_k = (1 + k) / (10 + k) that product is 9! n! / (n + 9)!, 1.5e-6 of the start's weight left at n = 2000,
    where a plain 0.999 average would still hold 13.5 % of it."""
    net = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.zero_()
    ema = EMA(net, decay=0.999)
    with torch.no_grad():
        net.weight.fill_(1.0)
    prod = 1.0
    for k in range(2000):
        ema.update(net, step=k)
        prod *= ema.decay_at(k)
    assert abs(float(ema.model.weight) - (1 - prod)) < 1e-5
    assert 1 - float(ema.model.weight) < 1e-4
    plain = EMA(net, decay=0.999)
    with torch.no_grad():
        plain.model.weight.zero_()
    for _ in range(2000):
        plain.update(net)
    assert abs(1 - float(plain.model.weight) - 0.999**2000) < 1e-4


def test_skipped_step_leaves_the_average():
    net = nn.Linear(2, 2)
    ema = EMA(net, decay=0.9)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update(net, gate=torch.tensor(False), step=0)
    assert all(torch.equal(before[k], v) for k, v in ema.state_dict().items())
