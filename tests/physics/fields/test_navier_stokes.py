"""Tests of the pseudo-spectral 2D Navier-Stokes (Kolmogorov flow) solver, in float64 unless stated."""

from __future__ import annotations

import math

import pytest
import torch

from physics.fields import navier_stokes
from physics.fields.navier_stokes import (
    CFLError,
    KolmogorovFlow,
    energy,
    energy_spectrum,
    enstrophy,
    taylor_green,
    taylor_green_decay,
    velocity_from_vorticity,
    vorticity_from_velocity,
)

F64 = torch.float64
INVISCID = KolmogorovFlow(viscosity=0.0, drag=0.0, forcing_wavenumber=0)


def _random(flow: KolmogorovFlow, batch: int = 1, seed: int = 0, **kw) -> torch.Tensor:
    return flow.random_initial(batch, torch.Generator().manual_seed(seed), dtype=F64, **kw)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


# ---------------------------------------------------------------- 1. inviscid invariants


@pytest.fixture(scope="module")
def inviscid_run() -> tuple[torch.Tensor, torch.Tensor]:
    w0 = _random(INVISCID, batch=2, peak_wavenumber=3.0, max_velocity=1.0)
    return w0, INVISCID.advance(w0, 2.0)  # CFL-chosen dt ~ 0.049, 41 steps


def test_inviscid_flow_conserves_energy_and_enstrophy(inviscid_run):
    # The dealiased (Galerkin) semi-discrete system conserves both exactly; what is left is IF-RK4's
    # time error.  Observed at CFL 0.5 over 2 time units: energy ~1e-7, enstrophy ~5e-6 relative.
    w0, w = inviscid_run
    assert torch.allclose(energy(w), energy(w0), rtol=1e-6, atol=0)
    assert torch.allclose(enstrophy(w), enstrophy(w0), rtol=1e-4, atol=0)
    assert _rel(w, w0) > 0.1  # the flow did evolve


def test_inviscid_invariant_error_converges_at_fourth_order():
    w0 = _random(INVISCID, batch=1, peak_wavenumber=3.0, max_velocity=1.0)
    errs = [(enstrophy(INVISCID.advance(w0, 1.0, dt=dt)) / enstrophy(w0) - 1).abs().item() for dt in (0.04, 0.02)]
    assert errs[0] / errs[1] > 10.0  # 2^4 = 16 for 4th order; observed ~30


def test_energy_tolerance_detects_viscous_decay(inviscid_run):
    w0, _ = inviscid_run
    viscous = KolmogorovFlow(viscosity=1e-2, drag=0.0, forcing_wavenumber=0)
    w = viscous.advance(w0, 2.0)
    assert not torch.allclose(energy(w), energy(w0), rtol=1e-6, atol=0)
    assert (energy(w) < 0.99 * energy(w0)).all()


# ---------------------------------------------------------------- 2. Taylor-Green


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("viscosity", [1e-3, 1e-2])
def test_taylor_green_decays_exactly(k, viscosity):
    flow = KolmogorovFlow(viscosity=viscosity, drag=0.1, forcing_wavenumber=0)
    w0 = taylor_green(64, k, amplitude=2.0)
    u, v = flow.velocity(w0)
    assert (u.square() + v.square()).sqrt().max().item() == pytest.approx(2.0, rel=1e-12)
    w = flow.advance(w0, 3.0)
    factor = taylor_green_decay(3.0, k, viscosity, 0.1)
    assert _rel(w, factor * w0) < 1e-12  # advection vanishes, the linear part is exact: round-off only


# ---------------------------------------------------------------- 3. CFL


def test_explicit_dt_beyond_cfl_raises():
    flow = KolmogorovFlow()
    w = _random(flow, max_velocity=3.0)
    dt = flow.stable_dt(w)
    assert dt == pytest.approx(0.5 * flow.dx / 3.0, rel=1e-6)
    with pytest.raises(CFLError, match=r"Courant number .* dt .* max_cfl = 0.5") as info:
        flow.step(w, 1.5 * dt)
    assert isinstance(info.value, FloatingPointError)
    with pytest.raises(CFLError):
        flow.advance(w, 1.0, dt=1.5 * dt)
    flow.step(w, 0.99 * dt)  # within the limit: fine


def test_stable_dt_scales_inversely_with_velocity_and_is_capped():
    flow = KolmogorovFlow()
    w = _random(flow, batch=3, max_velocity=2.0)
    assert flow.stable_dt(2 * w) == pytest.approx(flow.stable_dt(w) / 2, rel=1e-12)
    assert flow.stable_dt(w) == pytest.approx(flow.stable_dt(w[:1]), rel=1e-6)  # all have max|u| = 2
    assert flow.stable_dt(1e-3 * w) == flow.max_dt
    assert flow.stable_dt(torch.zeros_like(w)) == flow.max_dt


def test_automatic_dt_respects_the_limit():
    flow = KolmogorovFlow()
    chosen = []
    original = KolmogorovFlow._if_rk4

    def spy(theta, a, h, lin, rhs):
        chosen.append(h)
        return original(theta, a, h, lin, rhs)

    w = _random(flow, max_velocity=3.0)
    KolmogorovFlow._if_rk4 = staticmethod(spy)
    try:
        w1 = flow.advance(w, 0.3)
    finally:
        KolmogorovFlow._if_rk4 = staticmethod(original)
    assert math.fsum(chosen) == pytest.approx(0.3, abs=1e-14)
    assert max(chosen) <= flow.stable_dt(w) * 1.2  # velocity changes little within 0.3 time units
    flow.step(w1, flow.stable_dt(w1))  # the step stable_dt proposes is accepted


# ---------------------------------------------------------------- 4. forced laminar flow


@pytest.mark.parametrize("t", [0.5, 5.0])
def test_laminar_kolmogorov_flow_from_rest(t):
    flow = KolmogorovFlow()
    lam = flow.viscosity * flow.forcing_wavenumber**2 + flow.drag
    w = flow.advance(torch.zeros(64, 64, dtype=F64), t)
    exact = flow.forcing(F64) / lam * (1 - math.exp(-lam * t))
    assert _rel(w, exact) < 1e-12
    assert _rel(flow.advance(torch.zeros(64, 64, dtype=F64), t, dt=0.01), exact) < 1e-12


def test_forcing_without_damping_grows_linearly():
    flow = KolmogorovFlow(viscosity=0.0, drag=0.0)  # L = 0 on the forcing mode: forcing stays explicit
    w = flow.advance(torch.zeros(64, 64, dtype=F64), 0.5)
    assert _rel(w, 0.5 * flow.forcing(F64)) < 1e-12


# ---------------------------------------------------------------- 5. diagnostics, velocity, dealiasing


def test_energy_spectrum_sums_to_energy():
    w = _random(KolmogorovFlow(), batch=2, max_velocity=2.0) + 0.3 * taylor_green(64, 20)
    k, spec = energy_spectrum(w)
    assert spec.shape == (2, k.numel()) and (spec >= 0).all()
    assert torch.allclose(spec.sum(-1), energy(w), rtol=1e-12)
    assert k[spec.mean(0).argmax()].item() in (3.0, 4.0, 5.0)  # peaked near peak_wavenumber = 4
    _, tg = energy_spectrum(taylor_green(64, 3, amplitude=1.0))
    assert tg[4].item() == pytest.approx(0.25, rel=1e-12) and tg.sum().item() == pytest.approx(0.25)  # |k|=3 sqrt2


def test_velocity_is_divergence_free_and_curl_returns_vorticity():
    w = _random(KolmogorovFlow(), batch=2, max_velocity=2.0)
    assert w.mean((-2, -1)).abs().max() < 1e-12
    u, v = velocity_from_vorticity(w)
    kx = torch.fft.rfftfreq(64, 1 / 64, dtype=F64)
    ky = torch.fft.fftfreq(64, 1 / 64, dtype=F64)[:, None]
    div = kx * torch.fft.rfft2(u) + ky * torch.fft.rfft2(v)
    assert div.abs().max() < 1e-10 * torch.fft.rfft2(u).abs().max()
    assert _rel(vorticity_from_velocity(u, v), w) < 1e-12


def _to_grid(w: torch.Tensor, m: int) -> torch.Tensor:
    """Spectral interpolation of a band-limited ``[..., n, n]`` field onto an ``m x m`` grid (m > n)."""
    n, h = w.shape[-1], w.shape[-1] // 2
    src = torch.fft.rfft2(w)
    dst = torch.zeros(*w.shape[:-2], m, m // 2 + 1, dtype=src.dtype)
    dst[..., :h, : h + 1] = src[..., :h, :]
    dst[..., m - h :, : h + 1] = src[..., h:, :]
    return torch.fft.irfft2(dst * (m / n) ** 2, s=(m, m))


def test_advection_is_dealiased_galerkin_product():
    flow, fine = KolmogorovFlow(), KolmogorovFlow(n=128)
    w = _random(flow, batch=2, peak_wavenumber=12.0, max_velocity=1.0)  # energetic up to the cutoff 21
    cut = (64 - 1) // 3
    coarse_hat = torch.fft.rfft2(flow.advection(w))
    keep = torch.zeros(64, 33, dtype=torch.bool)
    keep[: cut + 1, : cut + 1] = keep[-cut:, : cut + 1] = True
    assert coarse_hat[..., ~keep].abs().max() < 1e-12 * coarse_hat.abs().max()  # nothing above 2/3
    # Exact product: on 128^2 the modes <= 21 multiply without aliasing; restrict back to |k| <= 21.
    exact = torch.fft.rfft2(fine.advection(_to_grid(w, 128)))
    exact = torch.cat([exact[..., :32, :33], exact[..., -32:, :33]], dim=-2) / 4
    assert (coarse_hat - exact)[..., keep].abs().max() < 1e-10 * exact.abs().max()


# ---------------------------------------------------------------- 6. batches, precision, resolution


def test_batch_equals_separate_runs():
    flow = KolmogorovFlow()
    w = _random(flow, batch=3, max_velocity=2.0)
    batched = flow.advance(w, 0.2, dt=0.01)
    single = torch.stack([flow.advance(w[i], 0.2, dt=0.01) for i in range(3)])
    assert torch.allclose(batched, single, rtol=0, atol=1e-11 * w.abs().max().item())
    # Automatic dt: the batch shares the smallest step (~0.025 here), so it agrees to the time error only.
    auto = flow.advance(w, 0.2)
    assert _rel(auto, batched) < 1e-4  # observed 2e-5


def test_chunked_nonlinear_term_matches_unchunked(monkeypatch):
    flow = KolmogorovFlow()
    w = _random(flow, batch=6).reshape(2, 3, 64, 64)
    full = flow.advection(w)
    monkeypatch.setattr(navier_stokes, "_CHUNK_POINTS", 4 * 64 * 64)  # chunks of 4 fields
    assert torch.allclose(flow.advection(w), full, rtol=0, atol=1e-13 * full.abs().max().item())
    assert torch.allclose(flow.advance(w, 0.1, dt=0.01)[1, 2], flow.advance(w[1, 2], 0.1, dt=0.01), atol=1e-10)  # batched vs single: sums in another order on some CPUs' kernels (~1e-12 in float64); bugs are >> 1e-10


def test_float32_agrees_with_float64_and_random_initial_is_deterministic():
    flow = KolmogorovFlow()
    w32 = flow.random_initial(2, torch.Generator().manual_seed(5), dtype=torch.float32)
    w64 = flow.random_initial(2, torch.Generator().manual_seed(5), dtype=F64)
    assert torch.equal(w32, flow.random_initial(2, torch.Generator().manual_seed(5)))
    assert _rel(w32.double(), w64) < 1e-5
    u, v = flow.velocity(w64)
    assert torch.allclose((u.square() + v.square()).amax((-2, -1)).sqrt(), torch.full((2,), 3.0, dtype=F64))
    out32, out64 = flow.advance(w32, 1.0), flow.advance(w64, 1.0)
    assert out32.dtype == torch.float32
    assert _rel(out32.double(), out64) < 1e-3


def test_256_grid_runs_and_trajectory_shape():
    flow = KolmogorovFlow(n=256)
    w = _random(flow, batch=1)
    traj = flow.trajectory(w, num_states=3, interval=0.02)
    assert traj.shape == (1, 3, 256, 256) and torch.equal(traj[:, 0], w)
    assert torch.isfinite(traj).all() and _rel(traj[:, -1], w) > 1e-3
    assert flow.advance(w, 0.0) is w


def test_non_finite_state_raises():
    w = taylor_green(64, 1)
    w[3, 5] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite"):
        KolmogorovFlow().advance(w, 0.1)


# ---------------------------------------------------------------- 7. chaos sanity


def test_kolmogorov_flow_stays_bounded():
    flow = KolmogorovFlow()
    w = _random(flow, batch=1, seed=3)
    traj = flow.trajectory(w, num_states=6, interval=1.0)
    e = energy(traj)[0]
    print("Kolmogorov 64^2 energy at t = 0..5:", [round(x, 3) for x in e.tolist()])
    assert torch.isfinite(traj).all()
    # Laminar Kolmogorov energy is 1 / (4 lam^2) ~ 18.6; the turbulent state observed here is ~0.5-1.5.
    assert 0.1 < e.min() and e.max() < 10.0
    assert _rel(traj[0, -1], traj[0, 0]) > 0.5  # it moves
