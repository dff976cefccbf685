import math

import numpy as np
import pytest
import torch

from moldiff.diffusion.spaces import remove_com_dense
from physics.particles.energies import (
    SYSTEM_VARIANTS,
    SYSTEMS,
    DoubleWell,
    LennardJones,
    get_system,
    pairwise_distances,
)

ALL = sorted(SYSTEMS) + sorted(SYSTEM_VARIANTS)


def _configs(system, b, seed, dtype=torch.float64):
    """``b`` random configurations: DW4 Gaussian; LJ the ``n`` sites of a cubic grid (spacing 1.1) nearest
    its centre, jittered by up to 0.1 per coordinate and randomly rotated (no pair closer than ~0.75)."""
    g = torch.Generator().manual_seed(seed)
    n, d = system.n_particles, system.dim
    if isinstance(system, DoubleWell):
        return 2.0 * torch.randn(b, n, d, generator=g, dtype=dtype)
    k = math.ceil(n ** (1 / d)) + 2
    grid = torch.stack(torch.meshgrid(*[torch.arange(k, dtype=dtype)] * d, indexing="ij"), -1).reshape(-1, d)
    grid = grid - grid.mean(0)
    sites = 1.1 * grid[grid.norm(dim=-1).argsort()[:n]]
    x = sites + 0.2 * (torch.rand(b, n, d, generator=g, dtype=dtype) - 0.5)
    rots = torch.stack([_rotation(d, seed * 1000 + i, dtype) for i in range(b)])
    return x @ rots.transpose(-1, -2)


def _rotation(d, seed, dtype=torch.float64, reflect=False):
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=dtype))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    if reflect:
        q[:, 0] = -q[:, 0]
    return q


def test_registry():
    assert set(SYSTEMS) == {"dw4", "lj13", "lj55"}
    assert get_system("LJ13") is SYSTEMS["lj13"]
    assert (SYSTEMS["dw4"].n_particles, SYSTEMS["dw4"].dim) == (4, 2)
    assert (SYSTEMS["lj13"].n_particles, SYSTEMS["lj55"].n_particles, SYSTEMS["lj55"].dim) == (13, 55, 3)
    assert all(s.temperature == 1.0 for s in SYSTEMS.values())
    with pytest.raises(ValueError, match="dw4"):
        get_system("lj38")


def test_pairwise_distances_upper_triangle():
    x = torch.randn(3, 5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r = pairwise_distances(x)
    assert r.shape == (3, 10)
    full = torch.cdist(x, x)
    i, j = torch.triu_indices(5, 5, 1)
    torch.testing.assert_close(r, full[:, i, j])


@pytest.mark.parametrize("name", ["lj13", "lj55"])
def test_lennard_jones_matches_ase(name):
    from ase import Atoms
    from ase.calculators.lj import LennardJones as AseLJ

    system = SYSTEMS[name]
    bare = system.without_oscillator()
    x = _configs(system, 3, seed=1)
    e = bare.energy(x)
    f = bare.forces(x)
    for b in range(len(x)):
        atoms = Atoms(f"Ar{system.n_particles}", positions=x[b].numpy())
        atoms.calc = AseLJ(sigma=2 ** (-1 / 6), epsilon=1.0, rc=1000.0)
        e_ase = atoms.get_potential_energy()
        assert abs(e[b].item() - e_ase) <= 1e-8 * abs(e_ase)
        f_ase = atoms.get_forces()
        np.testing.assert_allclose(f[b].numpy(), f_ase, rtol=1e-8, atol=1e-8 * np.abs(f_ase).max())
    # the full energy adds the harmonic term
    torch.testing.assert_close(system.energy(x), e + 0.5 * remove_com_dense(x).pow(2).sum((-2, -1)))


def test_lennard_jones_scales_with_eps_and_rm():
    x = _configs(SYSTEMS["lj13"], 2, seed=2)
    base = LennardJones(oscillator=False)
    torch.testing.assert_close(LennardJones(eps=2.0, oscillator=False).energy(x), 2 * base.energy(x))
    torch.testing.assert_close(LennardJones(rm=1.5, oscillator=False).energy(1.5 * x), base.energy(x))
    torch.testing.assert_close(SYSTEM_VARIANTS["lj13_efm"].energy(x) - SYSTEMS["lj13"].energy(x), base.energy(x))


def test_lj13_global_minimum_energy():
    """The icosahedron relaxed from a perfect one reaches the Cambridge Cluster Database minimum -44.326801."""
    phi = (1 + 5**0.5) / 2
    verts = [(0, s1, s2 * phi) for s1 in (-1, 1) for s2 in (-1, 1)]
    verts = [v[k:] + v[:k] for v in verts for k in range(3)]
    x = torch.tensor([(0.0, 0.0, 0.0)] + verts, dtype=torch.float64)
    x = x / x[1].norm() * 0.96
    bare = SYSTEMS["lj13"].without_oscillator()
    x = x[None].clone()
    for _ in range(2000):
        x = x + 1e-3 * bare.forces(x)
    assert bare.energy(x).item() == pytest.approx(-44.326801, abs=1e-5)


def test_double_well_matches_double_loop():
    system = SYSTEMS["dw4"]
    x = torch.randn(6, 4, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2
    expected = torch.zeros(6, dtype=torch.float64)
    for b in range(6):
        for i in range(4):
            for j in range(i + 1, 4):
                s = (x[b, i] - x[b, j]).norm() - 4.0
                expected[b] += 0.0 * s - 4.0 * s**2 + 0.9 * s**4
    torch.testing.assert_close(system.energy(x), expected)
    # bgflow's form: ordered pairs, halved
    r = torch.cdist(x, x)
    s = r - 4.0
    ordered = (-4.0 * s**2 + 0.9 * s**4) * (1 - torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(system.energy(x), ordered.sum((-2, -1)) / 2)


def test_double_well_pair_minima():
    system = DoubleWell()
    lo, hi = system.pair_minima
    assert lo == pytest.approx(4 - math.sqrt(4 / 1.8)) and hi == pytest.approx(4 + math.sqrt(4 / 1.8))
    r = torch.linspace(0.5, 8.0, 150_001, dtype=torch.float64)
    e = system.pair_energy(r)
    left, right = r < 4, r > 4
    assert r[left][e[left].argmin()].item() == pytest.approx(lo, abs=1e-4)
    assert r[right][e[right].argmin()].item() == pytest.approx(hi, abs=1e-4)
    assert system.pair_energy(torch.tensor(lo)).item() == pytest.approx(-16 / 3.6)  # depth b^2 / 4c below the barrier


@pytest.mark.parametrize("name", ALL)
def test_forces_are_minus_finite_difference_gradient(name):
    system = get_system(name)
    x = _configs(system, 2, seed=4)
    f = system.forces(x)
    h = 1e-6
    fd = torch.zeros_like(x)
    for b in range(x.shape[0]):
        for i in range(system.n_particles):
            for k in range(system.dim):
                xp, xm = x.clone(), x.clone()
                xp[b, i, k] += h
                xm[b, i, k] -= h
                fd[b, i, k] = (system.energy(xp)[b] - system.energy(xm)[b]) / (2 * h)
    torch.testing.assert_close(f, -fd, rtol=1e-6, atol=1e-6 * fd.abs().max().item())


@pytest.mark.parametrize("name", ALL)
def test_closed_form_energy_and_grad_match_autograd(name):
    system = get_system(name)
    for dtype, tol in [(torch.float64, 1e-10), (torch.float32, 2e-4)]:
        x = _configs(system, 200, seed=5).to(dtype) + 3.0  # off-centre: the closed form centres internally
        e, g = system.energy_and_grad(x)
        assert e.dtype == dtype and g.shape == x.shape
        e_ref = system.energy(x.double())
        g_ref = -system.forces(x.double())
        torch.testing.assert_close(e.double(), e_ref, rtol=tol, atol=tol * e_ref.abs().max().item())
        torch.testing.assert_close(g.double(), g_ref, rtol=tol, atol=tol * g_ref.abs().max().item())
        ur, ug = system.reduced_energy_and_grad(x)
        torch.testing.assert_close(ur, e / system.temperature)


@pytest.mark.parametrize("name", ALL)
def test_energy_invariances(name):
    system = get_system(name)
    x = _configs(system, 4, seed=6)
    e = system.energy(x)
    d = system.dim
    rot = _rotation(d, 7)
    refl = _rotation(d, 8, reflect=True)
    assert torch.det(refl) < 0
    shift = torch.randn(1, 1, d, generator=torch.Generator().manual_seed(9), dtype=torch.float64) * 5
    perm = torch.randperm(system.n_particles, generator=torch.Generator().manual_seed(10))
    for y in (x @ rot.T, x @ refl.T, x + shift, x[:, perm]):
        torch.testing.assert_close(system.energy(y), e, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(system.forces(x @ rot.T), system.forces(x) @ rot.T, rtol=1e-8, atol=1e-8)


def test_log_prob_reduced_energy_and_batch_shapes():
    system = LennardJones(temperature=2.0)
    x = _configs(system, 3, seed=11)
    torch.testing.assert_close(system.reduced_energy(x), system.energy(x) / 2.0)
    torch.testing.assert_close(system.log_prob_unnormalized(x), -system.energy(x) / 2.0)
    with pytest.raises(ValueError, match="positions"):
        system.energy(x[:, :5])


def test_forces_inside_no_grad_and_coincident_particles_finite():
    system = SYSTEMS["dw4"]
    x = torch.zeros(2, 4, 2)
    x[0, 1] = x[0, 0]  # coincident particles
    x[1] = torch.randn(4, 2, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        f = system.forces(x)
    assert torch.isfinite(f).all()
    lj = SYSTEMS["lj13"]
    y = _configs(lj, 1, seed=13).float()
    y[0, 1] = y[0, 0]
    xr = y.clone().requires_grad_(True)
    lj.energy(xr).sum().backward()
    assert not torch.isnan(xr.grad).any()


def test_dtypes_and_gradients_flow():
    system = SYSTEMS["lj13"]
    x = _configs(system, 2, seed=14).float().requires_grad_(True)
    e = system.energy(x)
    assert e.dtype == torch.float32 and e.shape == (2,)
    (g,) = torch.autograd.grad(e.sum(), x, create_graph=True)  # differentiable twice (used by some losses)
    assert g.requires_grad
