import math

import pytest
import torch
from scipy import integrate, stats

from physics.assimilation.metrics import (
    AssimilationScores,
    crps_ensemble,
    crps_gaussian,
    ensemble_spread,
    rmse,
    score_ensemble,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _crps_brute(ens: torch.Tensor, truth: torch.Tensor, fair: bool) -> torch.Tensor:
    """O(M^2) reference: members along dim 0, one score per variable."""
    m = ens.shape[0]
    skill = (ens - truth).abs().mean(0)
    pairs = (ens[:, None] - ens[None, :]).abs().sum((0, 1))
    return skill - 0.5 * pairs / (m * (m - 1) if fair else m * m)


def test_rmse_simple_values():
    est = torch.tensor([1.0, 2.0, 3.0])
    truth = torch.tensor([1.0, 2.0, 5.0])
    assert rmse(est, truth).item() == pytest.approx(math.sqrt(4 / 3))
    assert rmse(est, est).item() == 0.0
    two = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert torch.allclose(rmse(two, torch.zeros(2), dim=1), torch.tensor([0.0, math.sqrt(12.5)]))
    assert torch.allclose(rmse(two, torch.zeros(2), dim=0), torch.tensor([math.sqrt(4.5), math.sqrt(8.0)]))


def test_spread_of_known_ensemble():
    ens = torch.tensor([[0.0, 0.0], [2.0, 4.0]])  # unbiased variances 2 and 8 -> sqrt(5)
    assert ensemble_spread(ens).item() == pytest.approx(math.sqrt(5.0))
    assert ensemble_spread(ens.T, member_dim=1).item() == pytest.approx(math.sqrt(5.0))
    assert ensemble_spread(torch.ones(5, 3, 3)).item() == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        ensemble_spread(torch.ones(1, 3))


@pytest.mark.parametrize("fair", [True, False])
@pytest.mark.parametrize("m", [2, 3, 7, 16])
def test_sorted_crps_matches_brute_force(fair, m):
    g = _gen(m)
    ens = torch.randn(m, 4, 5, generator=g, dtype=torch.float64)
    ens[1, 0, 0] = ens[0, 0, 0]  # ties
    truth = torch.randn(4, 5, generator=g, dtype=torch.float64)
    ref = _crps_brute(ens, truth, fair)
    got = crps_ensemble(ens, truth, fair=fair, reduction="none")
    assert torch.allclose(got, ref, atol=1e-12)
    assert crps_ensemble(ens, truth, fair=fair).item() == pytest.approx(ref.mean().item(), abs=1e-12)
    # members along another dim
    moved = crps_ensemble(ens.movedim(0, -1), truth, member_dim=-1, fair=fair, reduction="none")
    assert torch.allclose(moved, ref, atol=1e-12)


def test_crps_broadcasts_the_truth_over_batch_dims_before_the_member_dim():
    g = _gen(4)
    ens = torch.randn(3, 6, 6, generator=g, dtype=torch.float64)  # [batch, M, D] with M == D
    truth = torch.randn(6, generator=g, dtype=torch.float64)
    got = crps_ensemble(ens, truth, member_dim=1, reduction="none")
    assert got.shape == (3, 6)
    for b in range(3):
        assert torch.allclose(got[b], _crps_brute(ens[b], truth, fair=True), atol=1e-10)  # batched vs single: sums in another order on some CPUs' kernels (~1e-12 in float64); bugs are >> 1e-10


def test_crps_of_single_member_is_absolute_error():
    x = torch.tensor([[1.0, -2.0, 0.5]])
    y = torch.tensor([0.0, 1.0, 0.5])
    for fair in (True, False):
        assert torch.allclose(crps_ensemble(x, y, fair=fair, reduction="none"), (x[0] - y).abs())


def test_crps_big_field_runs_with_members_first():
    g = _gen(1)
    ens = torch.randn(6, 16, 16, 16, generator=g)
    truth = torch.zeros(16, 16, 16)
    assert crps_ensemble(ens, truth).shape == ()
    assert crps_ensemble(ens, truth, reduction="none").shape == (16, 16, 16)
    with pytest.raises(ValueError, match="reduction"):
        crps_ensemble(ens, truth, reduction="sum")


@pytest.mark.parametrize("y", [0.0, 0.7, -2.5])
def test_gaussian_crps_closed_form_matches_integral(y):
    mu, sigma = 0.3, 1.7
    f = lambda x: (stats.norm.cdf(x, mu, sigma) - (x >= y)) ** 2  # noqa: E731
    ref = integrate.quad(f, -40, y, limit=200)[0] + integrate.quad(f, y, 40, limit=200)[0]
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    got = crps_gaussian(t(mu), t(sigma), t(y)).item()
    assert got == pytest.approx(ref, abs=1e-9)
    # the known value at the mean: sigma (sqrt 2 - 1) / sqrt(pi)
    at_mean = crps_gaussian(t(0.0), t(2.0), t(0.0)).item()
    assert at_mean == pytest.approx(2.0 * (math.sqrt(2) - 1) / math.sqrt(math.pi))


def test_large_gaussian_ensemble_crps_matches_closed_form():
    g = _gen(2)
    m = 200_000
    y = torch.tensor([0.7, -1.5, 0.0], dtype=torch.float64)
    ens = torch.randn(m, 3, generator=g, dtype=torch.float64)
    ref = crps_gaussian(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64), y)
    got = crps_ensemble(ens, y, reduction="none")
    # Monte Carlo error of E|X - y| is about sd(|X - y|) / sqrt(M) < 1.2 / 447
    assert torch.allclose(got, ref, atol=5 * 1.2 / math.sqrt(m))


def test_fair_crps_is_unbiased_and_plain_crps_is_not():
    g = _gen(3)
    n, m = 200_000, 3  # many 3-member ensembles, one per variable
    y = torch.randn(n, generator=g, dtype=torch.float64)
    ens = torch.randn(m, n, generator=g, dtype=torch.float64)
    ref = crps_gaussian(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64), y).mean()
    fair = crps_ensemble(ens, y, fair=True)
    plain = crps_ensemble(ens, y, fair=False)
    per_var = crps_ensemble(ens, y, fair=True, reduction="none")
    se = per_var.std() / math.sqrt(n)
    assert abs(fair - ref) < 5 * se
    # the M^2 denominator adds E|X - X'| / (2 M) = 1 / (sqrt(pi) M) in expectation
    assert (plain - fair).item() == pytest.approx(1 / (math.sqrt(math.pi) * m), rel=0.02)
    assert plain - ref > 20 * se


def test_score_ensemble():
    ens = torch.tensor([[0.0, 0.0], [2.0, 4.0]])
    truth = torch.tensor([1.0, 0.0])
    scores = score_ensemble(ens, truth)
    assert isinstance(scores, AssimilationScores)
    assert scores.rmse == pytest.approx(math.sqrt((0 + 4) / 2))
    assert scores.spread == pytest.approx(math.sqrt(5.0))
    assert scores.crps == pytest.approx(_crps_brute(ens, truth, fair=True).mean().item())
    assert scores.as_dict("a/") == {"a/rmse": scores.rmse, "a/spread": scores.spread, "a/crps": scores.crps}


def test_score_windows_on_hand_made_ensembles():
    """Two windows, 4 states, 2 variables; two members at truth + c -+ s: the mean is off by c, the unbiased
    member variance is 2 s^2, and the fair CRPS of two members c -+ s away from the truth (c > s) is
    E|X - y| - |x1 - x2| / 2 = c - s."""
    from physics.assimilation.metrics import score_windows

    truth = torch.zeros(2, 4, 2)
    c = torch.tensor([1.0, 3.0])[:, None, None, None]  # per-window offset
    s = 0.5
    ens = torch.cat([truth[:, None] + c - s, truth[:, None] + c + s], 1)  # [2, 2, 4, 2]
    ens[:, :, 0] += 10.0  # a bad first state, removed by the spin-up
    observed = torch.tensor([True, False, True, True])
    sc = score_windows(ens, truth, observed, spinup=1)
    assert torch.allclose(sc.rmse_after_spinup, torch.tensor([1.0, 3.0], dtype=torch.float64))
    assert torch.allclose(sc.rmse_observed, torch.tensor([1.0, 3.0], dtype=torch.float64))
    assert torch.allclose(sc.rmse, torch.sqrt((torch.tensor([11.0, 13.0]) ** 2 + 3 * torch.tensor([1.0, 3.0]) ** 2) / 4).double())
    # two members +-s: unbiased variance 2 s^2
    assert torch.allclose(sc.spread, torch.full((2,), (2 * s * s) ** 0.5, dtype=torch.float64))
    assert torch.allclose(sc.crps, torch.tensor([1.0 - s, 3.0 - s], dtype=torch.float64))
    summary = sc.summary()
    assert summary["rmse_after_spinup"][0] == pytest.approx(2.0) and summary["rmse_after_spinup"][1] == pytest.approx(1.0)
    assert summary["spread_error_ratio"][0] == pytest.approx((2 * s * s) ** 0.5 / 2.0)
    with pytest.raises(ValueError, match="spinup"):
        score_windows(ens, truth, observed, spinup=4)
