"""Statistics that say whether generated field trajectories look like the data: one-point moments of the
vorticity (mean, std, kurtosis), its temporal autocorrelation, and the radial power spectrum -- with the
comparison of a model's trajectories against the data's as flat metrics and a figure."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from moldiff.nn.autoencoder import radial_power_spectrum

__all__ = ["FieldStatistics", "field_statistics", "spectrum_band_errors", "band_rmse", "compare_statistics",
           "statistics_figure"]


@dataclass(frozen=True)
class FieldStatistics:
    """``mean``, ``std``, ``kurtosis`` (Pearson: 3 for a Gaussian) of all values; ``autocorrelation [lags + 1]``
    (lag 0 .. lags, in states); ``spectrum [K]`` the mean radial power spectrum of a state."""

    mean: float
    std: float
    kurtosis: float
    autocorrelation: np.ndarray
    spectrum: np.ndarray


def field_statistics(traj: Tensor, lags: int = 10) -> FieldStatistics:
    """Statistics of trajectories ``[N, L, H, W]`` (``lags < L``).  The autocorrelation at lag ``l`` is
    ``E[(x_t - m)(x_{t+l} - m)] / s^2`` over trajectories, times and grid points (``m``, ``s`` the overall mean and
    std)."""
    x = torch.as_tensor(traj).double()
    if x.ndim != 4:
        raise ValueError(f"expected trajectories [N, L, H, W], got {tuple(x.shape)}")
    if not 0 <= lags < x.shape[1]:
        raise ValueError(f"lags must be in [0, L - 1] = [0, {x.shape[1] - 1}], got {lags}")
    if not torch.isfinite(x).all():
        raise ValueError("trajectories contain NaN or inf")
    m, s = x.mean(), x.std()
    d = (x - m) / s
    acf = [float((d[:, : x.shape[1] - k] * d[:, k:]).mean()) for k in range(lags + 1)]
    return FieldStatistics(float(m), float(s), float(d.pow(4).mean()), np.array(acf),
                           radial_power_spectrum(x).reshape(-1, min(x.shape[-2:]) // 2 + 1).mean(0).numpy())


def spectrum_band_errors(p_hat, p, bands: list[int]) -> dict[str, float]:
    """Per band ``[a, b)`` of radial wavenumbers: the mean over ``k`` of ``|log(P_hat(k) / P(k))|`` for mean power
    spectra ``[K]`` (or ``[N, K]``, averaged over the rows first) -- 0.05 is about a 5 % error.  Keys ``"a-(b-1)"``."""
    mh, m = (torch.as_tensor(np.asarray(v)).double() for v in (p_hat, p))
    mh, m = (v.mean(0) if v.ndim == 2 else v for v in (mh, m))
    out = {}
    for a, b in zip(bands, bands[1:]):
        b = min(b, len(m))
        if a < b:
            out[f"{a}-{b - 1}"] = float((mh[a:b] / m[a:b]).log().abs().mean())
    return out


def band_rmse(error: Tensor, edges: list[int]) -> dict[str, float]:
    """The RMSE of error fields ``[..., H, W]`` split by radial wavenumber: band ``[a, b)`` for consecutive
    ``edges`` (the last band open: every mode from the last edge on, the grid's corners included), keys
    ``"k a-(b-1)"`` and ``"k a+"``.  By Parseval the squares of the bands sum to the total mean squared error when
    ``edges[0] == 0``, so the bands say at which scales an estimate is wrong."""
    e = torch.as_tensor(error).double()
    h, w = e.shape[-2:]
    rings = int(math.ceil(math.hypot(h / 2, w / 2))) + 1  # every ring of the grid, corners included
    power = radial_power_spectrum(e, bins=rings).reshape(-1, rings).mean(0) / (h * w)  # sums to mean(e^2)
    out = {}
    for a, b in zip(edges, [*edges[1:], rings]):
        name = f"k {a}-{b - 1}" if b < rings else f"k {a}+"
        out[name] = float(power[a:b].sum().sqrt())
    return out


def compare_statistics(model: FieldStatistics, data: FieldStatistics, bands: list[int]) -> dict[str, float]:
    """Flat metrics: each moment of the model and of the data, the mean absolute autocorrelation difference over
    lags >= 1, and the spectrum error per band (:func:`spectrum_band_errors`)."""
    out = {}
    for name in ("mean", "std", "kurtosis"):
        out[f"{name}/model"], out[f"{name}/data"] = getattr(model, name), getattr(data, name)
    out["autocorrelation/mean_abs_error"] = float(np.abs(model.autocorrelation[1:] - data.autocorrelation[1:]).mean())
    out.update({f"spectrum/log_error_k{k}": v for k, v in spectrum_band_errors(model.spectrum, data.spectrum,
                                                                              bands).items()})
    return out


def statistics_figure(stats: dict[str, FieldStatistics], interval: float, title: str):
    """Two panels: mean radial power spectra (log-log) and temporal autocorrelations, one curve per entry (the
    first drawn black: the data)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    for i, (name, st) in enumerate(stats.items()):
        style = dict(color="k", lw=2) if i == 0 else dict(lw=1.2)
        k = np.arange(len(st.spectrum))
        a.loglog(k[1:], st.spectrum[1:], label=f"{name} (std {st.std:.2f}, kurt {st.kurtosis:.2f})", **style)
        b.plot(np.arange(len(st.autocorrelation)) * interval, st.autocorrelation, label=name, **style)
    a.set_xlabel("wavenumber k")
    a.set_ylabel("power")
    a.legend(fontsize=7)
    b.set_xlabel("lag (time units)")
    b.set_ylabel("autocorrelation")
    b.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
