"""Field statistics against analytic answers: Gaussian moments, AR(1) autocorrelation, spectrum band errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from physics.fields.statistics import compare_statistics, field_statistics, spectrum_band_errors, statistics_figure


def _ar1(rho: float, n=64, length=40, size=8, seed=0) -> torch.Tensor:
    """Trajectories of i.i.d. Gaussian fields evolving as x_{t+1} = rho x_t + sqrt(1 - rho^2) eps (stationary)."""
    g = torch.Generator().manual_seed(seed)
    x = [torch.randn(n, size, size, generator=g, dtype=torch.float64)]
    for _ in range(length - 1):
        x.append(rho * x[-1] + math.sqrt(1 - rho**2) * torch.randn(n, size, size, generator=g, dtype=torch.float64))
    return 3.0 + 2.0 * torch.stack(x, 1)


def test_moments_and_autocorrelation_of_an_ar1_field():
    st = field_statistics(_ar1(0.8), lags=5)
    assert st.mean == pytest.approx(3.0, abs=0.03) and st.std == pytest.approx(2.0, rel=0.02)
    assert st.kurtosis == pytest.approx(3.0, abs=0.1)  # Gaussian
    np.testing.assert_allclose(st.autocorrelation, 0.8 ** np.arange(6), atol=0.03)
    assert st.spectrum.shape == (5,)  # 8 x 8 grid: rings 0..4
    white = field_statistics(_ar1(0.0, seed=1), lags=3)
    np.testing.assert_allclose(white.autocorrelation[1:], 0.0, atol=0.02)


def test_spectrum_band_errors_and_comparison():
    p = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    assert spectrum_band_errors(p, p, [1, 3, 5]) == {"1-2": 0.0, "3-4": 0.0}
    assert spectrum_band_errors(4 * p, p, [1, 3, 5])["3-4"] == pytest.approx(math.log(4))
    assert spectrum_band_errors(np.stack([p, 3 * p]), p, [1, 5])["1-4"] == pytest.approx(math.log(2))
    assert set(spectrum_band_errors(p, p, [1, 4, 12])) == {"1-3", "4-4"}  # bands cut at the last ring
    a, b = field_statistics(_ar1(0.8), 5), field_statistics(_ar1(0.3, seed=2), 5)
    m = compare_statistics(a, b, [1, 3, 5])
    assert m["autocorrelation/mean_abs_error"] > 0.2 and m["std/model"] == a.std and m["std/data"] == b.std
    assert compare_statistics(a, a, [1, 3, 5])["autocorrelation/mean_abs_error"] == 0.0
    statistics_figure({"data": a, "model": b}, 0.2, "t")


def test_bad_input():
    with pytest.raises(ValueError, match="\\[N, L, H, W\\]"):
        field_statistics(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="lags"):
        field_statistics(torch.zeros(2, 3, 4, 4), lags=3)
    bad = torch.zeros(2, 3, 4, 4)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        field_statistics(bad, lags=1)


def test_band_rmse_splits_the_error_by_scale_and_sums_to_the_total():
    from physics.fields.statistics import band_rmse

    y, x = torch.meshgrid(*[torch.arange(64, dtype=torch.float64)] * 2, indexing="ij")
    wave = 2.0 * torch.cos(2 * torch.pi * 5 * x / 64) + 0.5 * torch.sin(2 * torch.pi * (20 * x + 20 * y) / 64)
    bands = band_rmse(wave[None], [0, 4, 12, 22])
    # a cosine of amplitude a has rms a / sqrt(2): k = 5 in 4-11, |(20, 20)| = 28.3 in the open last band
    assert bands["k 4-11"] == pytest.approx(2.0 / 2**0.5, rel=1e-12)
    assert bands["k 22+"] == pytest.approx(0.5 / 2**0.5, rel=1e-12)
    assert bands["k 0-3"] < 1e-12 and bands["k 12-21"] < 1e-12
    noise = torch.randn(3, 32, 48, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    total = sum(v**2 for v in band_rmse(noise, [0, 2, 9]).values())
    assert total == pytest.approx(float(noise.square().mean()), rel=1e-12)
