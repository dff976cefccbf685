"""EDM's preconditioning against exact answers: with the exact raw network ``F`` the preconditioned denoiser is
the exact denoiser of a Gaussian (every prediction kind, every time, float64); near ``t = 0`` the network's error
is scaled by ``c_out ~ s`` instead of amplified; EDM's loss weight makes the raw target unit-variance."""

import math

import pytest
import torch

from moldiff.diffusion import VESDE, VPSDE, Denoiser, EDMPreconditioning, SubVPSDE, denoising_loss

from .gaussian import GaussianTarget

D = torch.float64
MU, S2 = [0.5, -1.0], [1.5, 0.7]


def _exact_raw_net(pre: EDMPreconditioning, mu, s2):
    """The raw network ``F(c_in y, c_noise)`` whose preconditioned output is the exact posterior mean of
    ``x0 ~ N(mu, diag(s2))`` given ``y = x0 + s eps``."""
    mu, s2 = torch.as_tensor(mu, dtype=D), torch.as_tensor(s2, dtype=D)

    def F(inp, c_noise):
        s = torch.exp(4 * c_noise)[:, None]
        c = pre.coefficients(s)
        y = inp / c.c_in
        x0 = mu + s2 / (s2 + s**2) * (y - mu)
        return (x0 - c.c_skip * y) / c.c_out

    return F


@pytest.mark.parametrize("proc", [VPSDE(), SubVPSDE(), VESDE(sigma_min=0.01, sigma_max=20.0)], ids=["vp", "subvp", "ve"])
def test_preconditioned_exact_network_is_the_exact_denoiser(proc):
    pre = EDMPreconditioning(sigma_data=1.3)
    target = GaussianTarget(proc, MU, S2)
    den = Denoiser(_exact_raw_net(pre, MU, S2), proc, kind="x0", precond=pre)
    ref = target.denoiser()
    g = torch.Generator().manual_seed(0)
    for t in (proc.t_min, 0.01, 0.3, 0.9, 1.0):
        x = target.sample(t, 64, g)
        tb = torch.full((64,), t, dtype=D)
        _, sigma = proc.marginal(torch.tensor(t, dtype=D))
        for kind in ("x0", "eps", "score", "velocity"):
            a, b = getattr(den, kind)(x, tb), getattr(ref, kind)(x, tb)
            tol = 1e-9 * max(1.0, float(sigma) ** -2)  # rounding in x0 is amplified by 1 / sigma^2 in the score
            assert torch.allclose(a, b, rtol=1e-9, atol=tol), (t, kind, (a - b).abs().max())


def test_coefficients_and_the_small_noise_limit():
    pre = EDMPreconditioning(sigma_data=0.5)
    s = torch.tensor([1e-6, 0.5, 1e6], dtype=D)
    c = pre.coefficients(s)
    assert torch.allclose(c.c_in * torch.sqrt(s**2 + 0.25), torch.ones(3, dtype=D))
    assert c.c_skip[0] == pytest.approx(1.0) and c.c_out[0] == pytest.approx(1e-6, rel=1e-6)
    assert c.c_skip[2] == pytest.approx(0.0, abs=1e-12) and c.c_out[2] == pytest.approx(0.5)
    assert torch.allclose(c.c_noise, torch.log(s) / 4)
    # whatever a (bounded) network says, near t = 0 the denoiser returns the input: no 1 / sigma amplification
    proc = VPSDE()
    den = Denoiser(lambda x, t: 100 * torch.ones_like(x), proc, kind="x0", precond=pre)
    x = torch.randn(8, 2, dtype=D, generator=torch.Generator().manual_seed(0))
    t = torch.full((8,), proc.t_min, dtype=D)
    a, sig = proc.marginal(t[:1])
    s_min = float(sig / a)  # c_out F + (c_skip - 1) x / alpha, with c_out <= s and 1 - c_skip <= s^2 / sigma_data^2
    assert ((den.x0(x, t) - x / a).abs() <= 100 * s_min + s_min**2 / 0.25 * (x / a).abs() + 1e-12).all()
    with pytest.raises(ValueError, match="predicts x0"):
        Denoiser(lambda x, t: x, proc, kind="eps", precond=pre)
    with pytest.raises(ValueError, match="sigma_data"):
        EDMPreconditioning(0.0)


def test_edm_weight_makes_the_raw_target_unit_variance():
    """``x0 ~ N(0, sigma_data^2)``: the raw network's regression target ``(x0 - c_skip y) / c_out`` has unit
    variance at every noise level, and ``lambda |D - x0|^2`` is ``|F - target|^2``."""
    pre = EDMPreconditioning(sigma_data=0.7)
    g = torch.Generator().manual_seed(1)
    for s in (0.01, 0.3, 2.0, 80.0):
        x0 = 0.7 * torch.randn(200_000, generator=g, dtype=D)
        y = x0 + s * torch.randn(200_000, generator=g, dtype=D)
        c = pre.coefficients(torch.tensor(s, dtype=D))
        target = (x0 - c.c_skip * y) / c.c_out
        assert target.var().item() == pytest.approx(1.0, rel=0.02)
        F = torch.randn(200_000, generator=g, dtype=D)
        D_ = c.c_skip * y + c.c_out * F
        assert torch.allclose(pre.loss_weight(torch.tensor(s, dtype=D)) * (D_ - x0) ** 2, (F - target) ** 2)


def test_the_loss_goes_through_the_denoiser():
    """The exact raw network has zero loss in the ``x0`` kind's own weighting and in EDM's (a per-sample value);
    the EDM weighting needs a preconditioned denoiser; the log-normal times have EDM's median noise level."""
    proc = VPSDE()
    pre = EDMPreconditioning(sigma_data=1.0)
    x0 = torch.randn(512, 2, generator=torch.Generator().manual_seed(0), dtype=D)
    # a "data set" of one point per sample: the exact denoiser of a point mass at x0 is x0 itself
    t = torch.full((512,), 0.2, dtype=D)

    def point_mass_F(inp, c_noise):
        s = torch.exp(4 * c_noise)[:, None]
        c = pre.coefficients(s)
        return (x0 - c.c_skip * inp / c.c_in) / c.c_out

    den = Denoiser(point_mass_F, proc, kind="x0", precond=pre)
    for weighting in ("kind", "edm"):
        loss = denoising_loss(den, x0, t=t, weighting=weighting, generator=torch.Generator().manual_seed(1))
        assert loss.shape == (512,) and loss.max() < 1e-18
    with pytest.raises(ValueError, match="preconditioned"):
        denoising_loss(Denoiser(lambda x, t: x, proc, kind="x0"), x0, weighting="edm")
    from moldiff.diffusion import sample_time

    ts = sample_time(proc, 20_000, distribution="lognormal", generator=torch.Generator().manual_seed(2), dtype=D)
    levels = proc.noise_level(ts)
    inside = (ts > proc.t_min) & (ts < 1)
    assert torch.log(levels[inside]).median().item() == pytest.approx(-1.2, abs=0.05)
    assert math.isclose(float(ts.min()), proc.t_min, rel_tol=1e-6) or float(ts.min()) > proc.t_min
