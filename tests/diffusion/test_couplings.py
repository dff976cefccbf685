"""Minibatch couplings: exact / entropic OT plans, their fallbacks, pair sampling, equivariant alignment."""

import math
import warnings

import numpy as np
import ot
import pytest
import torch

from moldiff.diffusion.alignment import _alternate, _principal_frames, _start_rotations, align, equivariant_cost_matrix, kabsch
from moldiff.diffusion.couplings import (
    COUPLING_KINDS,
    Coupler,
    CouplingWarning,
    independent_plan,
    ot_plan,
    pair_batches,
    plan_cost,
    plan_to_permutation,
    sample_plan,
    sqeuclidean_cost,
)
from moldiff.diffusion.couplings import _solve_plan
from moldiff.diffusion.spaces import remove_com_dense


def _marginal_errors(P, a, b):
    return np.abs(P.sum(1) - a).max(), np.abs(P.sum(0) - b).max()


def _cost(rng, n0, n1, dim=3, shift=1.0):
    x, y = rng.standard_normal((n0, dim)), rng.standard_normal((n1, dim)) + shift
    return ot.dist(x, y)


def _rotation(d, g):
    """Uniformly random proper rotation ``[d, d]`` float64 from an explicit generator."""
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))[None, :]
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


# ---------------------------------------------------------------------------------------------------
# plans
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n0,n1", [(1, 1), (5, 5), (17, 17), (64, 64), (8, 13), (13, 6)])
def test_exact_plan_is_emd(n0, n1):
    rng = np.random.default_rng(n0 * 100 + n1)
    C = _cost(rng, n0, n1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CouplingWarning)
        P = ot_plan(C)
        P_raw = ot_plan(C, normalize_cost=False)
    ref = ot.emd(ot.unif(n0), ot.unif(n1), C)
    np.testing.assert_allclose(P, ref, atol=1e-12)
    np.testing.assert_allclose(P_raw, ref, atol=1e-12)
    assert P.dtype == np.float64 and P.shape == (n0, n1)
    # non-uniform weights
    a, b = rng.random(n0) + 0.1, rng.random(n1) + 0.1
    Pw = ot_plan(C, a, b)
    np.testing.assert_allclose(Pw, ot.emd(a / a.sum(), b / b.sum(), C), atol=1e-12)
    ea, eb = _marginal_errors(Pw, a / a.sum(), b / b.sum())
    assert max(ea, eb) < 1e-12
    if n0 == n1:
        perm = plan_to_permutation(P)
        assert perm is not None and sorted(perm) == list(range(n0))
        # the permutation fast path transports at the plan's cost ...
        assert C[np.arange(n0), perm].mean() == pytest.approx(plan_cost(P, C), rel=1e-12)
        # ... which no random permutation beats
        for _ in range(50):
            assert plan_cost(P, C) <= C[np.arange(n0), rng.permutation(n0)].mean() + 1e-12


def test_plan_to_permutation_rejects_non_permutations():
    assert plan_to_permutation(independent_plan(np.full(3, 1 / 3), np.full(3, 1 / 3))) is None
    assert plan_to_permutation(np.full((2, 3), 1 / 6)) is None
    P = np.eye(4)[[2, 0, 3, 1]] / 4
    np.testing.assert_array_equal(plan_to_permutation(P), [2, 0, 3, 1])
    P[0, 2], P[0, 1] = 0.2, 0.05  # same argmax, but mass off the permutation
    assert plan_to_permutation(P) is None


def test_sinkhorn_marginals_and_limits():
    rng = np.random.default_rng(0)
    B = 24
    C = _cost(rng, B, B, dim=4)
    u = ot.unif(B)
    emd = plan_cost(ot.emd(u, u, C), C)
    indep = C.mean()
    gaps = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", CouplingWarning)
        for reg in (1e-2, 3e-2, 1e-1):
            P = ot_plan(C, method="sinkhorn", reg=reg)
            assert max(_marginal_errors(P, u, u)) < 1e-8
        for reg in (3e-3, 1e-2, 3e-2, 1e-1):
            P = ot_plan(C, method="sinkhorn", reg=reg, num_itermax=20_000)
            assert max(_marginal_errors(P, u, u)) < 1e-5
            gaps.append(plan_cost(P, C) - emd)
        # non-uniform, non-square marginals
        a, b = rng.random(B) + 0.2, rng.random(B + 5) + 0.2
        Cab = _cost(rng, B, B + 5)
        P = ot_plan(Cab, a, b, method="sinkhorn", reg=0.05)
        assert max(_marginal_errors(P, a / a.sum(), b / b.sum())) < 1e-8
        # large reg: the independent plan
        P = ot_plan(C, method="sinkhorn", reg=1e3)
        np.testing.assert_allclose(P, independent_plan(u, u), rtol=1e-2)
    assert all(g >= -1e-12 for g in gaps)
    assert gaps == sorted(gaps)  # the entropic bias shrinks with reg ...
    assert gaps[0] < 0.01 * emd  # ... to the exact OT cost
    assert plan_cost(P, C) == pytest.approx(indep, rel=1e-3)


def test_sinkhorn_reg_units():
    """normalize_cost=True: reg relative to max(C); False: reg in cost units (SB-CFM: reg = 2 sigma^2)."""
    rng = np.random.default_rng(1)
    C = _cost(rng, 10, 10) * 7.0
    P_rel = ot_plan(C, method="sinkhorn", reg=0.05)
    P_abs = ot_plan(C, method="sinkhorn", reg=0.05 * C.max(), normalize_cost=False)
    np.testing.assert_allclose(P_rel, P_abs, atol=1e-10)
    sigma = 1.0
    P_sb = ot_plan(C, method="sinkhorn", reg=2 * sigma**2, normalize_cost=False, num_itermax=10_000)
    ref = ot.sinkhorn(ot.unif(10), ot.unif(10), C, 2 * sigma**2, numItermax=10_000)
    np.testing.assert_allclose(P_sb, ref, atol=1e-10)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("method", ["exact", "sinkhorn"])
def test_non_finite_cost_falls_back(bad, method):
    C = _cost(np.random.default_rng(2), 6, 7)
    C[2, 3] = bad
    with pytest.warns(CouplingWarning, match="non-finite"):
        P = ot_plan(C, method=method)
    u, v = ot.unif(6), ot.unif(7)
    assert np.isfinite(P).all()
    np.testing.assert_allclose(P, independent_plan(u, v))


def test_exact_iteration_limit_falls_back():
    C = _cost(np.random.default_rng(3), 40, 40)
    with pytest.warns(CouplingWarning, match="numItermax"):
        P, status = _solve_plan(C, num_itermax=5)
    assert status == "independent"
    assert max(_marginal_errors(P, ot.unif(40), ot.unif(40))) < 1e-15


def test_sinkhorn_underflow_falls_back_to_log_domain():
    rng = np.random.default_rng(4)
    B = 12
    C = _cost(rng, B, B) + 1000.0  # exp(-C / reg) underflows to 0 everywhere
    u = ot.unif(B)
    with pytest.warns(CouplingWarning, match="log-domain"):
        P, status = _solve_plan(C, method="sinkhorn", reg=0.5, normalize_cost=False)
    assert status == "sinkhorn_log"
    assert np.isfinite(P).all() and max(_marginal_errors(P, u, u)) < 1e-6
    # the log-domain plan is the plan Sinkhorn would give without underflow (C - 1000 has the same plan)
    np.testing.assert_allclose(P, ot.sinkhorn(u, u, C - 1000.0, 0.5, stopThr=1e-12), atol=1e-8)
    # a tiny reg: plain Sinkhorn underflows and the log domain cannot converge in the sweeps allowed
    with pytest.warns(CouplingWarning):
        P, status = _solve_plan(C, method="sinkhorn", reg=1e-6, num_itermax=50)
    assert status in ("rounded", "sinkhorn_log", "independent")
    assert np.isfinite(P).all() and (P >= 0).all() and max(_marginal_errors(P, u, u)) < 1e-12
    # rounding keeps the plan close to OT: far below the independent cost
    emd = plan_cost(ot.emd(u, u, C), C)
    assert plan_cost(P, C) - emd < 0.5 * (C.mean() - emd)


def test_ot_plan_validates_arguments():
    C = np.ones((3, 4))
    with pytest.raises(ValueError):
        ot_plan(C, method="greedy")
    with pytest.raises(ValueError):
        ot_plan(C, np.ones(4))
    with pytest.raises(ValueError):
        ot_plan(C, method="sinkhorn", reg=0.0)
    with pytest.raises(ValueError):
        ot_plan(np.ones(3))
    # a constant (all-zero) cost is fine
    P = ot_plan(np.zeros((3, 3)), method="sinkhorn")
    np.testing.assert_allclose(P, np.full((3, 3), 1 / 9))


# ---------------------------------------------------------------------------------------------------
# sampling pairs
# ---------------------------------------------------------------------------------------------------


def test_sample_plan_follows_the_plan():
    rng = np.random.default_rng(5)
    P = rng.random((4, 5))
    P[1, 2] = 0.0
    P[3, :] = 0.0  # a row without mass
    P /= P.sum()
    n = 200_000
    g = torch.Generator().manual_seed(0)
    state = torch.random.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    i, j = sample_plan(P, n, g)
    assert torch.equal(torch.random.get_rng_state(), state)
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)
    assert i.shape == j.shape == (n,) and i.dtype == j.dtype == torch.int64
    counts = np.zeros_like(P)
    np.add.at(counts, (i.numpy(), j.numpy()), 1)
    assert counts[1, 2] == 0 and counts[3].sum() == 0
    expected = n * P
    mask = expected > 0
    chi2 = (((counts - expected) ** 2)[mask] / expected[mask]).sum()
    dof = mask.sum() - 1  # 14: mean 14, sd ~5.3
    assert chi2 < dof + 6 * math.sqrt(2 * dof)
    # reproducible from the seed, with a torch or a numpy generator
    i2, j2 = sample_plan(P, n, torch.Generator().manual_seed(0))
    assert torch.equal(i, i2) and torch.equal(j, j2)
    a1 = sample_plan(P, 100, np.random.default_rng(7))
    a2 = sample_plan(P, 100, np.random.default_rng(7))
    assert torch.equal(a1[0], a2[0]) and torch.equal(a1[1], a2[1])
    with pytest.raises(TypeError):
        sample_plan(P, 3, None)


def test_pair_batches():
    P = np.eye(5)[[4, 2, 0, 1, 3]] / 5
    i, j = pair_batches(P)  # permutation: no generator needed, each sample once
    assert i.tolist() == list(range(5)) and j.tolist() == [4, 2, 0, 1, 3]
    Q = independent_plan(ot.unif(5), ot.unif(5))
    with pytest.raises(ValueError):
        pair_batches(Q)
    i, j = pair_batches(Q, torch.Generator().manual_seed(1))
    assert i.shape == j.shape == (5,)


# ---------------------------------------------------------------------------------------------------
# equivariant alignment
# ---------------------------------------------------------------------------------------------------


def test_kabsch_recovers_rotation():
    g = torch.Generator().manual_seed(0)
    for d in (2, 3):
        R = torch.stack([_rotation(d, g) for _ in range(5)])
        y = torch.randn(5, 9, d, generator=g, dtype=torch.float64)
        x = y @ R.transpose(1, 2)
        R_hat = kabsch(x, y)
        torch.testing.assert_close(R_hat, R, atol=1e-10, rtol=0)
        torch.testing.assert_close(torch.linalg.det(R_hat), torch.ones(5, dtype=torch.float64))
        # a mirror image: the best proper rotation has det +1, with reflections the mirror is recovered
        F = torch.eye(d, dtype=torch.float64)
        F[0, 0] = -1
        xm = y @ (R @ F).transpose(1, 2)
        assert torch.allclose(torch.linalg.det(kabsch(xm, y)), torch.ones(5, dtype=torch.float64))
        Rm = kabsch(xm, y, reflections=True)
        torch.testing.assert_close(Rm, R @ F, atol=1e-10, rtol=0)
        torch.testing.assert_close(torch.linalg.det(Rm), -torch.ones(5, dtype=torch.float64))
    # float32 in, float32 out
    assert kabsch(x.float(), y.float()).dtype == torch.float32


def _unaligned(x, y):
    return float(((x - x.mean(0)) - (y - y.mean(0))).pow(2).sum())


@pytest.mark.parametrize("d,n", [(2, 4), (2, 9), (3, 5), (3, 13)])
def test_alignment_never_raises_the_cost(d, n):
    g = torch.Generator().manual_seed(10 * d + n)
    for _ in range(10):
        x = torch.randn(n, d, generator=g, dtype=torch.float64) + 2.0
        y = torch.randn(n, d, generator=g, dtype=torch.float64) - 1.0
        unaligned = _unaligned(x, y)
        for starts in ("identity", "pca+identity"):
            y_al, c = align(x, y, starts=starts)
            assert c <= unaligned + 1e-10
            assert c == pytest.approx(float((x - y_al).pow(2).sum()), abs=1e-10)
        # more starts never hurt
        costs = [align(x, y, starts=s)[1] for s in ("pca", "pca+identity", "pca_permuted")]
        assert costs[1] <= costs[0] + 1e-10
        assert costs[2] <= costs[0] + 1e-10


@pytest.mark.parametrize("n", [2, 4, 6, 7])
def test_assignment_matches_the_hungarian_algorithm(n):
    """Enumeration (n <= 6) and scipy's Hungarian (above) reach the same optimal total cost."""
    from scipy.optimize import linear_sum_assignment

    from moldiff.diffusion.alignment import _assign

    D = np.random.default_rng(n).random((50, n, n))
    perm = _assign(D, linear_sum_assignment)
    assert all(sorted(p) == list(range(n)) for p in perm.tolist())
    got = D[np.arange(50)[:, None], np.arange(n)[None], perm].sum(1)
    ref = np.array([D[k][linear_sum_assignment(D[k])].sum() for k in range(50)])
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_alternation_is_monotone():
    rng = np.random.default_rng(11)
    M, n, d = 64, 11, 3
    X, Y = remove_com_dense(rng.standard_normal((M, n, d))), remove_com_dense(rng.standard_normal((M, n, d)))
    Q0 = np.broadcast_to(np.eye(d), (M, d, d))
    prev = ((X - Y) ** 2).sum((1, 2))
    for iterations in range(1, 7):
        cost, perm, Q = _alternate(X, Y, Q0, iterations, False)
        assert (cost <= prev + 1e-10).all()
        # the reported cost is the cost of the reported labelling and rotation
        Yp = np.take_along_axis(Y, perm[..., None], axis=1) @ Q
        np.testing.assert_allclose(cost, ((X - Yp) ** 2).sum((1, 2)), atol=1e-10)
        np.testing.assert_allclose(np.linalg.det(Q), 1.0)
        prev = cost


def test_start_sets_are_groups_with_all_sign_flips():
    for d, reflections, starts, size in [(2, False, "pca", 2), (3, False, "pca", 4), (3, True, "pca", 8),
                                         (2, False, "pca_permuted", 4), (3, False, "pca_permuted", 24),
                                         (3, True, "pca_permuted", 48)]:
        G = _start_rotations(d, reflections, starts)
        assert len(G) == size
        flat = {tuple(np.round(m, 6).ravel()) for m in G}
        for A in G:  # closed under products
            for B in G:
                assert tuple(np.round(A @ B, 6).ravel()) in flat
        U = _principal_frames(np.random.default_rng(0).standard_normal((3, 7, d)))
        np.testing.assert_allclose(np.linalg.det(U), 1.0)


@pytest.mark.parametrize("d,n,starts,reflections", [(2, 4, "pca", False), (2, 7, "pca_permuted", False),
                                                    (3, 6, "pca", False), (3, 13, "pca", False),
                                                    (3, 13, "pca_permuted", False), (3, 8, "pca", True),
                                                    (2, 5, "skew", False), (3, 13, "skew", False), (3, 8, "skew", True)])
def test_aligned_cost_is_invariant(d, n, starts, reflections):
    g = torch.Generator().manual_seed(100 * d + n)
    kw = dict(starts=starts, reflections=reflections)
    for _ in range(4):
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        y = torch.randn(n, d, generator=g, dtype=torch.float64) + 0.5
        _, c = align(x, y, **kw)
        R = _rotation(d, g)
        if reflections:
            R[:, 0] = -R[:, 0]  # an improper one
        for xx, yy in [
            (x, y[torch.randperm(n, generator=g)]),  # relabel y
            (x, y @ R.T + 3.0),  # rotate + shift y
            (x[torch.randperm(n, generator=g)], y),  # relabel x
            (x @ R.T - 1.0, y),  # rotate + shift x
            ((x @ R.T)[torch.randperm(n, generator=g)], (y @ _rotation(d, g).T)[torch.randperm(n, generator=g)]),
        ]:
            assert align(xx, yy, **kw)[1] == pytest.approx(c, abs=1e-8)


@pytest.mark.parametrize("d,n", [(2, 5), (3, 13), (3, 55)])
def test_alignment_recovers_a_rotated_permuted_copy(d, n):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = (x @ _rotation(d, g).T)[torch.randperm(n, generator=g)] + 4.0
    y_al, c = align(x, y)
    assert c < 1e-10
    torch.testing.assert_close(y_al, x, atol=1e-9, rtol=0)
    if d == 3:
        # a mirror image needs reflections
        mirror = x * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
        assert align(x, mirror)[1] > 1e-3
        y_al, c = align(x, mirror, reflections=True)
        assert c < 1e-10
        torch.testing.assert_close(y_al, x, atol=1e-9, rtol=0)


def test_equivariant_cost_matrix_consistency():
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(5, 6, 3, generator=g)
    x1 = torch.randn(4, 6, 3, generator=g) + 1.0
    cost, aligned = equivariant_cost_matrix(x0, x1)
    assert cost.shape == (5, 4) and cost.dtype == np.float64
    assert aligned.shape == (5, 4, 6, 3) and aligned.dtype == torch.float32
    direct = (x0[:, None].double() - aligned.double()).pow(2).sum((2, 3)).numpy()
    np.testing.assert_allclose(direct, cost, rtol=1e-5)
    for i, j in [(0, 0), (4, 3), (2, 1)]:
        y_al, c = align(x0[i], x1[j])
        assert c == pytest.approx(cost[i, j], rel=1e-10)
        torch.testing.assert_close(y_al, aligned[i, j])
    # aligned targets are rigid copies: same (sorted) pairwise distances as the original
    pd = torch.cdist(x1[1].double(), x1[1].double()).flatten().sort().values
    pa = torch.cdist(aligned[2, 1].double(), aligned[2, 1].double()).flatten().sort().values
    torch.testing.assert_close(pa, pd, atol=1e-5, rtol=0)
    assert equivariant_cost_matrix(x0, x1, return_aligned=False)[1] is None
    with pytest.raises(ValueError):
        equivariant_cost_matrix(x0.reshape(5, -1), x1.reshape(4, -1))


# ---------------------------------------------------------------------------------------------------
# the coupler
# ---------------------------------------------------------------------------------------------------


def test_coupler_kinds_shapes():
    g = torch.Generator().manual_seed(0)
    B, n, d = 16, 5, 3
    x0 = torch.randn(B, n, d, generator=g)
    x1 = torch.randn(B, n, d, generator=g) + 1.0
    state = torch.random.get_rng_state()
    for kind in COUPLING_KINDS:
        c = Coupler(kind)
        with warnings.catch_warnings():
            warnings.simplefilter("error", CouplingWarning)
            a, b = c(x0, x1, torch.Generator().manual_seed(1))
        assert a.shape == b.shape == x0.shape and a.dtype == b.dtype == x0.dtype
        assert c.last is not None and c.last.fallback == ""
        assert c.last.plan_cost <= c.last.independent_cost + 1e-9
        # reproducible
        a2, b2 = Coupler(kind)(x0, x1, torch.Generator().manual_seed(1))
        assert torch.equal(a, a2) and torch.equal(b, b2)
    assert torch.equal(torch.random.get_rng_state(), state)
    a, b = Coupler()(x0, x1)
    assert a is x0 and b is x1
    with pytest.raises(ValueError):
        Coupler("greedy")
    with pytest.raises(ValueError):
        Coupler("sinkhorn")(x0, x1)  # sampling needs a generator
    with pytest.raises(ValueError):
        Coupler("eq_ot")(x0.reshape(B, -1), x1.reshape(B, -1))


def test_coupler_ot_pairs_at_the_emd_cost():
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(32, 2, 3, generator=g, dtype=torch.float64)
    x1 = torch.randn(32, 2, 3, generator=g, dtype=torch.float64) * 2 + 1
    c = Coupler("ot")
    a, b = c(x0, x1)
    assert torch.equal(a, x0)
    assert sorted(map(tuple, b.reshape(32, -1).tolist())) == sorted(map(tuple, x1.reshape(32, -1).tolist()))
    C = sqeuclidean_cost(x0, x1)
    emd = plan_cost(ot.emd(ot.unif(32), ot.unif(32), C), C)
    paired = (a - b).pow(2).sum((1, 2)).mean().item()
    assert paired == pytest.approx(emd, rel=1e-10)
    assert c.last.pair_cost == pytest.approx(emd, rel=1e-10)
    assert c.last.plan_cost == pytest.approx(emd, rel=1e-10)
    assert c.last.independent_cost == pytest.approx(C.mean(), rel=1e-10)
    # Sinkhorn pairs cost more than exact OT but much less than independent pairs
    s = Coupler("sinkhorn", reg=0.01)
    s(x0, x1, torch.Generator().manual_seed(0))
    assert emd - 1e-9 <= s.last.plan_cost < 0.5 * (emd + C.mean())


def test_coupler_equivariant_returns_aligned_targets():
    g = torch.Generator().manual_seed(4)
    B, n, d = 12, 6, 3
    x0 = torch.randn(B, n, d, generator=g, dtype=torch.float64)
    x0 = x0 - x0.mean(1, keepdim=True)
    # targets: rotated, relabelled copies of the sources, in shuffled order
    order = torch.randperm(B, generator=g)
    x1 = torch.stack([(x0[k] @ _rotation(d, g).T)[torch.randperm(n, generator=g)] for k in order.tolist()])
    c = Coupler("eq_ot")
    a, b = c(x0, x1)
    torch.testing.assert_close(a, x0)
    torch.testing.assert_close(b, x0, atol=1e-9, rtol=0)  # every source found its own copy, aligned
    assert c.last.plan_cost < 1e-12
    s = Coupler("eq_sinkhorn", reg=0.01)
    a, b = s(x0, x1, torch.Generator().manual_seed(0))
    per_pair = (a - b).pow(2).sum((1, 2))
    assert per_pair.mean().item() == pytest.approx(s.last.pair_cost, rel=1e-9)


@pytest.mark.parametrize("d,n", [(2, 4), (3, 13)])
def test_two_pass_coupler_is_invariant_and_finds_copies(d, n):
    """Plan on a one-start search of all pairs, re-alignment of the selected pairs: the returned targets do not
    change when any target sample is rotated and relabelled (1e-8), turn with a rotated source, and exact
    copies are recovered."""
    g = torch.Generator().manual_seed(10 + n)
    B = 16
    x0 = torch.randn(B, n, d, generator=g, dtype=torch.float64)
    x0 = x0 - x0.mean(1, keepdim=True)
    x1 = torch.randn(B, n, d, generator=g, dtype=torch.float64) * 0.7
    x1 = x1 - x1.mean(1, keepdim=True)
    c = Coupler("eq_ot", starts="skew", iterations=1, refine_starts="pca", refine_iterations=3)
    a, b = c(x0, x1)
    moved = torch.stack([(x1[k] @ _rotation(d, g).T)[torch.randperm(n, generator=g)] for k in range(B)])
    a2, b2 = c(x0, moved)
    torch.testing.assert_close(a2, a, atol=1e-8, rtol=0)
    torch.testing.assert_close(b2, b, atol=1e-8, rtol=0)
    R = _rotation(d, g)
    a3, b3 = c(x0 @ R.T, x1)
    torch.testing.assert_close(b3, b @ R.T, atol=1e-8, rtol=0)
    # the skew start is one of the pca starts and alternating never raises the cost: refining never hurts
    c(x0, x1)
    coarse = Coupler("eq_ot", starts="skew", iterations=1)
    coarse(x0, x1)
    assert c.last.plan_cost == pytest.approx(coarse.last.plan_cost, rel=1e-12)
    assert c.last.pair_cost <= coarse.last.pair_cost + 1e-12
    # copies: every source finds its own rotated, relabelled copy
    order = torch.randperm(B, generator=g)
    copies = torch.stack([(x0[k] @ _rotation(d, g).T)[torch.randperm(n, generator=g)] for k in order.tolist()])
    _, b4 = c(x0, copies)
    torch.testing.assert_close(b4, x0, atol=1e-9, rtol=0)
    assert c.last.pair_cost < 1e-12


def test_coupler_survives_non_finite_states():
    x0 = torch.randn(6, 4, 2, generator=torch.Generator().manual_seed(0))
    x1 = x0.clone()
    x1[2, 1, 0] = float("nan")
    for kind in ("ot", "sinkhorn", "eq_ot"):
        c = Coupler(kind)
        with pytest.warns(CouplingWarning):
            a, b = c(x0, x1, torch.Generator().manual_seed(0))
        assert a is x0 and b is x1
        assert c.last.fallback == "independent"


def test_align_source_per_graph_relabels_and_rotates_each_graph():
    from moldiff.diffusion import align_source_per_graph, remove_com

    g = torch.Generator().manual_seed(3)
    sizes = torch.tensor([1, 5, 5, 9, 17])
    batch = torch.repeat_interleave(torch.arange(5), sizes)
    data = remove_com(torch.randn(len(batch), 3, generator=g, dtype=torch.float64) * 1.5, batch, 5)
    src = remove_com(torch.randn(len(batch), 3, generator=g, dtype=torch.float64), batch, 5)
    out = align_source_per_graph(data, src, batch, 5)
    assert out.shape == src.shape and out.dtype == src.dtype
    starts = torch.cumsum(sizes, 0) - sizes
    for k, (s, n) in enumerate(zip(starts.tolist(), sizes.tolist())):
        a, b, d = out[s : s + n], src[s : s + n], data[s : s + n]
        assert a.mean(0).abs().max() < 1e-12  # zero CoM kept
        # a relabelled rigid motion of the source: the multiset of pairwise distances is unchanged
        torch.testing.assert_close(torch.pdist(a).sort().values, torch.pdist(b).sort().values)
        assert ((d - a) ** 2).sum() <= ((d - b) ** 2).sum() + 1e-9
    # a relabelled copy is recovered exactly (the search starts from the identity rotation: a local search,
    # not a global one -- a rotated copy may end in a local minimum)
    b9 = torch.zeros(9, dtype=torch.long)
    x = remove_com(torch.randn(9, 3, generator=g, dtype=torch.float64), b9, 1)
    y = x[torch.randperm(9, generator=g)]
    rec = align_source_per_graph(x, y, b9, 1, iterations=10)
    torch.testing.assert_close(rec, x)
    with pytest.raises(ValueError, match="one shape"):
        align_source_per_graph(x, y[:5], b9, 1)
