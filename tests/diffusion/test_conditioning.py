"""Conditioning through the core and classifier-free guidance, against a two-class Gaussian mixture whose
conditional and unconditional denoisers are exact."""

import math

import pytest
import torch

from moldiff.diffusion import (VPSDE, ClassifierFreeGuidance, Denoiser, drop_condition, get_sampler,
                               missing_condition, time_grid)
from moldiff.nn import ConditionEmbedding, MLPDenoiser

D = torch.float64
MEANS = torch.tensor([[-2.0, 0.0], [2.0, 1.0]], dtype=D)
S = 0.5  # the std of each class


def _mixture_model(proc):
    """Exact score of ``x_t`` given class ``cond [B, 1]`` (0. or 1.), or of the 50/50 mixture for NaN rows or
    ``cond=None``."""

    def score(x, t, cond=None):
        alpha, sigma = proc.marginal(t.to(D))
        alpha, var = alpha[:, None], (alpha**2 * S**2 + sigma**2)[:, None]
        comp = -(x[:, None, :] - alpha[:, None] * MEANS[None]) / var[:, None]  # [B, 2, 2]: each class's score
        logw = -0.5 * ((x[:, None, :] - alpha[:, None] * MEANS[None]) ** 2).sum(-1) / var  # [B, 2]
        mix = (torch.softmax(logw, -1)[..., None] * comp).sum(1)
        if cond is None:
            return mix
        missing = missing_condition(cond)
        c = torch.nan_to_num(cond[:, 0]).long().clamp(0, 1)
        given = comp[torch.arange(len(x)), c]
        return torch.where(missing[:, None], mix, given)

    return Denoiser(score, proc, kind="score")


def _sample(model, n, cond, seed=0):
    proc = model.process
    g = torch.Generator().manual_seed(seed)
    x = proc.prior_sample(torch.zeros(n, 2, dtype=D), generator=g)
    x = (x - x.mean(0)) / x.std(0)  # exact prior moments: the start's own sampling error would count otherwise
    return get_sampler("ode_heun")(model, x, time_grid(proc, 200, dtype=D), generator=g, progress=False, cond=cond)


def test_the_condition_reaches_the_network_through_the_sampler():
    """A class condition gives that class's Gaussian (mean and std within 3 standard errors); NaN rows give the
    mixture (half the samples in each mode)."""
    proc = VPSDE()
    model = _mixture_model(proc)
    n = 4000
    x = _sample(model, n, torch.ones(n, 1, dtype=D))
    assert ((x.mean(0) - MEANS[1]).abs() < 3 * S / math.sqrt(n)).all(), x.mean(0)
    assert ((x.std(0) - S).abs() < 3 * S / math.sqrt(2 * n)).all(), x.std(0)
    cond = drop_condition(torch.zeros(n, 1, dtype=D), 0.5, torch.Generator().manual_seed(3))
    x = _sample(model, n, cond)
    dropped = missing_condition(cond)
    frac_right = (x[dropped, 0] > 0).double().mean().item()
    assert abs(frac_right - 0.5) < 4 * math.sqrt(0.25 / int(dropped.sum()))
    assert (x[~dropped, 0] < 0).all()  # the kept rows are class 0


def test_classifier_free_guidance_is_the_affine_combination():
    proc = VPSDE()
    model = _mixture_model(proc)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 2, generator=g, dtype=D)
    t = torch.rand(32, generator=g, dtype=D) * 0.9 + 0.05
    cond = torch.ones(32, 1, dtype=D)
    for w in (0.0, 0.5, 3.0):
        guided = ClassifierFreeGuidance(model, w)
        expect = (1 + w) * model.eps(x, t, cond) - w * model.eps(x, t)
        assert torch.allclose(guided.eps(x, t, cond), expect, atol=1e-10)  # the same sum in another order
        assert torch.allclose(guided.x0(x, t, cond), (1 + w) * model.x0(x, t, cond) - w * model.x0(x, t), atol=1e-10)
    assert torch.allclose(ClassifierFreeGuidance(model, 2.0).eps(x, t), model.eps(x, t))  # no condition: unguided
    with pytest.raises(ValueError, match="guidance scale"):
        ClassifierFreeGuidance(model, -1.0)


def test_guidance_pushes_samples_away_from_the_other_class():
    """With ``w > 0`` the guided score adds ``w (score_c - score_mix)``, which points away from the other mode:
    the guided samples' mean moves from class 1's mean away from class 0, and stays finite."""
    proc = VPSDE()
    model = _mixture_model(proc)
    n = 2000
    cond = torch.ones(n, 1, dtype=D)
    plain = _sample(model, n, cond, seed=1)
    guided = _sample(ClassifierFreeGuidance(model, 2.0), n, cond, seed=1)
    axis = (MEANS[1] - MEANS[0]) / (MEANS[1] - MEANS[0]).norm()
    assert torch.isfinite(guided).all()
    assert (guided @ axis).mean() > (plain @ axis).mean() + 0.01


def test_condition_dropout_and_missing_rows():
    c = torch.arange(1000, dtype=D).reshape(500, 2)
    assert drop_condition(c, 0.0) is c
    dropped = drop_condition(c, 0.3, torch.Generator().manual_seed(0))
    miss = missing_condition(dropped)
    assert abs(miss.double().mean().item() - 0.3) < 0.07
    assert torch.equal(dropped[~miss], c[~miss]) and torch.isnan(dropped[miss]).all()
    bad = c.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(ValueError, match="partly NaN"):
        missing_condition(bad)
    with pytest.raises(ValueError, match="dropout"):
        drop_condition(c, 1.5)


@pytest.mark.usefixtures("global_rng")
def test_condition_embedding_and_a_conditional_mlp():
    torch.manual_seed(0)
    emb = ConditionEmbedding(3, 8)
    c = torch.randn(4, 3)
    c[1] = float("nan")
    out = emb(c, 4)
    assert torch.equal(out[1], emb.null) and torch.equal(emb(None, 4), emb.null.expand(4, 8))
    assert not torch.equal(out[0], emb.null)
    with pytest.raises(ValueError, match=r"\[B, C\]"):
        emb(torch.zeros(4, 2), 4)
    net = MLPDenoiser(2, width=16, depth=1, time_dim=8, cond_dim=3)
    nn_out = net(torch.randn(4, 2), torch.rand(4), c)
    assert nn_out.shape == (4, 2) and torch.isfinite(nn_out).all()
    with pytest.raises(ValueError, match="unconditional"):
        MLPDenoiser(2, width=16, depth=1, time_dim=8)(torch.randn(4, 2), torch.rand(4), c)
