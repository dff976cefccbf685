"""Sample-quality metrics for particle systems (DW4, LJ13, LJ55): pure functions, tested on known answers.

Conventions
-----------
* Positions are ``[B, n, d]`` (torch or numpy); energies, log-densities and log-weights are ``[B]``.
  Everything is computed in float64.
* Energies are *reduced* (in units of kT), as the energy module returns them.
* **Non-finite samples never vanish silently.**  A model sample whose energy exploded (``inf``/``NaN``)
  is dropped from the energy Wasserstein distances -- the convention of the literature (Klein et al.
  filter such samples) -- and is counted in :func:`nonfinite_fraction`, which
  :class:`ParticleMetrics` reports next to them (``frac_nonfinite``).  In the distance histogram a
  non-finite distance lands in the overflow bin, so it *counts* against the model.  In the importance
  weights a non-finite log-weight is a weight of 0 (the sample stays in the count ``n``).  Reference
  data must be finite: a non-finite reference value raises ``ValueError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "energy_wasserstein",
    "nonfinite_fraction",
    "interatomic_distances",
    "distance_histogram_tv",
    "distance_wasserstein",
    "importance_log_weights",
    "effective_sample_size",
    "ImportanceEstimate",
    "importance_estimate",
    "mean_nll",
    "ParticleMetrics",
    "particle_metrics",
]

ArrayLike = Tensor | np.ndarray


def _vec(x: Any, name: str) -> np.ndarray:
    """``x`` as a float64 numpy vector ``[B]`` (a ``[B, 1]`` column is accepted)."""
    if isinstance(x, Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"{name} must be a vector [B], got shape {a.shape}")
    return a


def nonfinite_fraction(values: ArrayLike) -> float:
    """Fraction of entries of ``values [B]`` that are ``NaN`` or ``±inf`` (``0.0`` for an empty vector)."""
    a = _vec(values, "values")
    return float((~np.isfinite(a)).mean()) if len(a) else 0.0


# --------------------------------------------------------------------------------------------------
# Energy distributions
# --------------------------------------------------------------------------------------------------


def energy_wasserstein(
    e_model: ArrayLike,
    e_ref: ArrayLike,
    p: Literal[1, 2] | float = 1,
    *,
    nonfinite: Literal["drop", "inf"] = "drop",
) -> float:
    """Exact 1D Wasserstein-``p`` distance between the empirical distributions of the model energies
    ``e_model [B]`` and the reference energies ``e_ref [M]`` (uniform weights; ``B != M`` is fine).

    POT's ``ot.wasserstein_1d`` (from the quantile functions; equal to ``ot.emd2`` with cost ``|x - y|^p``),
    raised to ``1/p``.  For two samples that differ by a shift ``c``, ``W_p = |c|``.

    Non-finite model energies (``NaN``/``±inf``, an exploded sample): with ``nonfinite="drop"``
    (default, the literature's convention) they are left out and the distance is that of the finite
    ones -- report :func:`nonfinite_fraction` next to it (:class:`ParticleMetrics` does); if *every*
    model energy is non-finite the result is ``inf``.  With ``nonfinite="inf"`` any non-finite model
    energy makes the result ``inf``.  Non-finite reference energies raise ``ValueError``.
    """
    if p < 1:
        raise ValueError(f"p must be >= 1, got {p}")
    if nonfinite not in ("drop", "inf"):
        raise ValueError(f"nonfinite must be 'drop' or 'inf', got {nonfinite!r}")
    a, b = _vec(e_model, "e_model"), _vec(e_ref, "e_ref")
    if len(a) == 0 or len(b) == 0:
        raise ValueError(f"empty energy sample (model {len(a)}, reference {len(b)})")
    if not np.isfinite(b).all():
        raise ValueError(f"reference energies contain {int((~np.isfinite(b)).sum())} non-finite values")
    finite = np.isfinite(a)
    if not finite.all():
        if nonfinite == "inf" or not finite.any():
            return math.inf
        a = a[finite]
    import ot

    return float(ot.wasserstein_1d(a, b, p=float(p))) ** (1.0 / float(p))


# --------------------------------------------------------------------------------------------------
# Interatomic distances
# --------------------------------------------------------------------------------------------------


def interatomic_distances(x: ArrayLike, *, chunk: int = 4096) -> ArrayLike:
    """Pairwise distances ``|x_i - x_j|`` for all pairs ``i < j`` of every configuration.

    ``x [B, n, d]`` -> ``[B, n(n-1)/2]``, pairs in row-major order ``(0,1), (0,2), ..., (n-2,n-1)``
    (``torch.triu_indices(n, n, 1)``).  Returns the input's type: a torch tensor (differentiable, same
    dtype/device) for a tensor, a float64 numpy array for anything else.  Computed by explicit
    differences (not the ``|a|^2 + |b|^2 - 2ab`` expansion of ``torch.cdist``), in batches of ``chunk``
    configurations to bound memory; non-finite positions give non-finite distances.
    """
    is_torch = isinstance(x, Tensor)
    t = x if is_torch else torch.as_tensor(np.asarray(x, dtype=np.float64))
    if t.ndim != 3:
        raise ValueError(f"positions must have shape [B, n, d], got {tuple(t.shape)}")
    n = t.shape[1]
    i, j = torch.triu_indices(n, n, 1, device=t.device)
    parts = [(blk[:, i] - blk[:, j]).norm(dim=-1) for blk in t.split(max(1, chunk))] or [t.new_zeros(0, len(i))]
    out = torch.cat(parts) if len(parts) > 1 else parts[0]
    return out if is_torch else out.numpy()


def _flat_distances(x: ArrayLike) -> np.ndarray:
    d = interatomic_distances(x.detach() if isinstance(x, Tensor) else x)
    if isinstance(d, Tensor):
        d = d.to("cpu", torch.float64).numpy()
    return np.asarray(d, dtype=np.float64).reshape(-1)


def _histogram_with_overflow(d: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts ``[underflow, bin_1 .. bin_k, overflow]``; non-finite values go to the overflow bin."""
    finite = np.isfinite(d)
    df = d[finite]
    inner, _ = np.histogram(df, bins=edges)
    under = int((df < edges[0]).sum())
    over = int((df > edges[-1]).sum()) + int((~finite).sum())
    return np.concatenate([[under], inner, [over]]).astype(np.float64)


def distance_histogram_tv(
    x_model: ArrayLike,
    x_ref: ArrayLike,
    *,
    bins: int | np.ndarray = 100,
    range: tuple[float, float] | None = None,  # noqa: A002 - numpy's name
) -> float:
    """Total variation distance ``0.5 * Σ |p_k - q_k|`` in ``[0, 1]`` between the normalised histograms
    of the interatomic distances (all pairs ``i < j``, pooled over configurations) of ``x_model
    [B, n, d]`` and ``x_ref [M, n, d]``.

    Both histograms use the same edges: ``bins`` equal bins over ``range`` (default ``[0, 1.1 * max
    reference distance]``), or ``bins`` given as an array of edges.  Two extra bins hold the values
    below and above the range, so model distances outside it count against the model instead of being
    lost; a non-finite model distance (``NaN`` positions) goes to the overflow bin.  Each histogram is
    normalised by its total count, so ``B != M`` is fine.  Non-finite reference positions raise
    ``ValueError``.  Binning makes the value resolution-dependent: compare numbers computed with the
    same ``bins``/``range``.
    """
    dm, dr = _flat_distances(x_model), _flat_distances(x_ref)
    if len(dm) == 0 or len(dr) == 0:
        raise ValueError(f"no interatomic distances (model {len(dm)}, reference {len(dr)}); need n >= 2 particles")
    if not np.isfinite(dr).all():
        raise ValueError("reference positions contain non-finite values")
    if np.ndim(bins) == 0:
        nb = int(bins)  # type: ignore[arg-type]
        if nb < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        lo, hi = (0.0, 1.1 * float(dr.max())) if range is None else (float(range[0]), float(range[1]))
        if not hi > lo:
            raise ValueError(f"empty histogram range [{lo}, {hi}]")
        edges = np.linspace(lo, hi, nb + 1)
    else:
        if range is not None:
            raise ValueError("give either bin edges or a range, not both")
        edges = np.asarray(bins, dtype=np.float64)
        if edges.ndim != 1 or len(edges) < 2 or not (np.diff(edges) > 0).all():
            raise ValueError("bin edges must be a strictly increasing vector of length >= 2")
    hm = _histogram_with_overflow(dm, edges)
    hr = _histogram_with_overflow(dr, edges)
    return float(0.5 * np.abs(hm / hm.sum() - hr / hr.sum()).sum())


def distance_wasserstein(x_model: ArrayLike, x_ref: ArrayLike, p: Literal[1, 2] | float = 2) -> float:
    """Exact 1D Wasserstein-``p`` distance between the interatomic distances (all pairs ``i < j``, pooled over
    configurations) of ``x_model [B, n, d]`` and ``x_ref [M, n, d]`` -- the binning-free companion of
    :func:`distance_histogram_tv` (same length unit as the positions).  Configurations with a non-finite
    coordinate are left out (as :func:`energy_wasserstein` drops non-finite energies); ``inf`` if none is finite.
    For a set and the same set scaled by ``s``, ``W_2 = |s - 1| sqrt(mean d^2)``."""
    xm = x_model.detach().cpu().double().numpy() if isinstance(x_model, Tensor) else np.asarray(x_model, np.float64)
    xr = x_ref.detach().cpu().double().numpy() if isinstance(x_ref, Tensor) else np.asarray(x_ref, np.float64)
    if xm.ndim != 3 or xr.ndim != 3:
        raise ValueError(f"positions must have shape [B, n, d], got {xm.shape} and {xr.shape}")
    if not np.isfinite(xr).all():
        raise ValueError("reference positions contain non-finite values")
    xm = xm[np.isfinite(xm).all(axis=(1, 2))]
    if len(xm) == 0:
        return math.inf
    return energy_wasserstein(_flat_distances(xm), _flat_distances(xr), p)


# --------------------------------------------------------------------------------------------------
# Importance weights, ESS, likelihood
# --------------------------------------------------------------------------------------------------


def importance_log_weights(neg_reduced_energy_target: ArrayLike, log_q_model: ArrayLike) -> np.ndarray:
    """Unnormalised log importance weights ``log w = -u(x) - log q(x)`` ``[B]`` of model samples ``x ~ q``
    for the Boltzmann target ``p(x) ∝ exp(-u(x))`` (``u`` the reduced energy, in kT).

    ``neg_reduced_energy_target [B]`` is ``-u(x)``; ``log_q_model [B]`` the model's log-density of its own
    samples (same coordinates/convention as the target, e.g. both on the centre-of-mass-free subspace).
    Float64 numpy.  Non-finite results (exploded energy, ``inf - inf``) are kept as they are:
    :func:`effective_sample_size` treats them as weight 0.
    """
    a = _vec(neg_reduced_energy_target, "neg_reduced_energy_target")
    b = _vec(log_q_model, "log_q_model")
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    with np.errstate(invalid="ignore"):
        return a - b


def effective_sample_size(log_w: ArrayLike) -> float:
    """Kish effective sample size, normalised to ``[1/n, 1]``: ``(Σ w)^2 / (n Σ w^2)`` for the
    unnormalised log-weights ``log_w [n]``, computed stably as
    ``exp(2 logsumexp(log w) - logsumexp(2 log w) - log n)``.

    * Invariant to adding a constant to ``log_w``; ``1`` for equal weights, ``1/n`` for one-hot weights.
    * Non-finite log-weights (``NaN``, ``±inf``) count as weight 0 but stay in ``n``; all weights 0 gives 0.
    * It is a noisy, optimistic estimate on small batches (a sample that misses the modes where the
      weights would be large looks fine): use batches of at least ~1,000 samples.
    """
    lw = _vec(log_w, "log_w")
    n = len(lw)
    if n == 0:
        raise ValueError("effective_sample_size of an empty set of weights")
    lw = lw[np.isfinite(lw)]
    if len(lw) == 0:
        return 0.0
    lw = lw - lw.max()
    lse1 = np.log(np.sum(np.exp(lw)))
    lse2 = np.log(np.sum(np.exp(2 * lw)))
    return float(min(1.0, np.exp(2 * lse1 - lse2 - math.log(n))))


def _log_z(lw: np.ndarray) -> float:
    """``log mean w`` over all ``n`` weights (non-finite ones are 0); ``-inf`` if every weight is 0."""
    f = lw[np.isfinite(lw)]
    if len(f) == 0:
        return -math.inf
    m = f.max()
    return float(m + math.log(np.exp(f - m).sum()) - math.log(len(lw)))


@dataclass(frozen=True)
class ImportanceEstimate:
    """Kish ESS (normalised) and ``log Z = log mean w`` of one set of ``n`` importance weights, each with its
    bootstrap standard error (``n_boot`` resamples of the ``n`` weights with replacement).

    ``log Z`` estimates the log normalising constant of ``exp(-u)`` in the density's coordinates (nats); it is
    biased low when the ESS is small (Jensen), and so is its spread: read a small ESS's error bar as a lower
    bound on the real uncertainty."""

    ess: float
    ess_se: float
    log_z: float
    log_z_se: float
    n: int
    n_boot: int

    def as_dict(self) -> dict[str, float]:
        return {"ess": self.ess, "ess_se": self.ess_se, "log_z": self.log_z, "log_z_se": self.log_z_se,
                "ess_n": float(self.n)}


def importance_estimate(log_w: ArrayLike, *, n_boot: int = 1000, generator: np.random.Generator) -> ImportanceEstimate:
    """:class:`ImportanceEstimate` of the log-weights ``log_w [n]`` (:func:`importance_log_weights`); the
    bootstrap draws from ``generator``."""
    lw = _vec(log_w, "log_w")
    if len(lw) == 0:
        raise ValueError("importance_estimate of an empty set of weights")
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2, got {n_boot}")
    idx = generator.integers(0, len(lw), size=(n_boot, len(lw)))
    ess_b = np.array([effective_sample_size(lw[i]) for i in idx])
    lz_b = np.array([_log_z(lw[i]) for i in idx])
    finite = np.isfinite(lz_b)
    return ImportanceEstimate(
        ess=effective_sample_size(lw), ess_se=float(ess_b.std(ddof=1)), log_z=_log_z(lw),
        log_z_se=float(lz_b[finite].std(ddof=1)) if finite.sum() > 1 else math.nan, n=len(lw), n_boot=n_boot)


def mean_nll(logp: ArrayLike, *, n_dof: int | None = None) -> float:
    """Mean negative log-likelihood ``-mean(log p)`` of ``logp [B]`` (natural log).

    Units: **nats per sample** by default; **nats per degree of freedom** when ``n_dof`` is given (the
    value is divided by it -- for particles with the centre of mass removed ``n_dof = (n - 1) * d``).
    The number depends on the coordinate convention of the density (units of length, CoM-free
    subspace or not): compare only models evaluated the same way.  Non-finite ``logp`` propagates
    (``-inf`` -> ``inf``, ``NaN`` -> ``NaN``): a failed likelihood is never averaged away.
    """
    a = _vec(logp, "logp")
    if len(a) == 0:
        raise ValueError("mean_nll of an empty vector")
    if n_dof is not None and n_dof < 1:
        raise ValueError(f"n_dof must be >= 1, got {n_dof}")
    with np.errstate(invalid="ignore"):
        v = float(-np.mean(a))
    return v / n_dof if n_dof is not None else v


# --------------------------------------------------------------------------------------------------
# Collected metrics
# --------------------------------------------------------------------------------------------------

_COLUMNS = (
    ("energy/w1", "energy_w1"),
    ("energy/w2", "energy_w2"),
    ("distance/tv", "distance_tv"),
    ("distance/w2", "distance_w2"),
    ("nll", "nll"),
    ("ess", "ess"),
    ("nfe", "nfe"),
    ("n_samples", "n_samples"),
    ("frac_nonfinite", "frac_nonfinite"),
)


@dataclass(frozen=True)
class ParticleMetrics:
    """The metrics of one sample set against the reference.

    ``energy_w1``/``energy_w2`` are over the finite model energies (kT); ``frac_nonfinite`` is the
    fraction of model samples with a non-finite energy (or position); ``distance_tv`` in ``[0, 1]``;
    ``nll`` in nats (per sample or per dof, as computed); ``ess`` normalised Kish ESS in ``[0, 1]``;
    ``nfe`` network evaluations per sample; ``distance_w2`` the W2 distance between the interatomic-distance
    distributions (length units)."""

    energy_w1: float
    energy_w2: float
    distance_tv: float
    n_samples: int
    distance_w2: float | None = None
    frac_nonfinite: float = 0.0
    nll: float | None = None
    ess: float | None = None
    nfe: int | None = None

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """``{"energy/w1": ..., "energy/w2": ..., "distance/tv": ..., "nll": ..., "ess": ..., "nfe": ...,
        "n_samples": ..., "frac_nonfinite": ...}`` as floats (for metric loggers), each key prefixed with
        ``prefix``; ``None`` entries are left out."""
        out: dict[str, float] = {}
        for key, attr in _COLUMNS:
            v = getattr(self, attr)
            if v is not None:
                out[prefix + key] = float(v)
        return out

    @staticmethod
    def table_header(name: str = "model") -> str:
        """The markdown header and separator lines matching :meth:`table`."""
        cols = [name] + [k for k, _ in _COLUMNS]
        return "| " + " | ".join(cols) + " |\n|" + "|".join(["---"] * len(cols)) + "|"

    def table(self, name: str = "", *, header: bool = False, digits: int = 4) -> str:
        """One markdown table row ``| name | w1 | w2 | tv | distance w2 | nll | ess | nfe | n | frac |`` (``-`` for a
        missing value); with ``header=True`` preceded by :meth:`table_header`."""
        cells = [name]
        for _, attr in _COLUMNS:
            v = getattr(self, attr)
            if v is None:
                cells.append("-")
            elif attr in ("nfe", "n_samples"):
                cells.append(str(int(v)))
            else:
                cells.append(f"{float(v):.{digits}g}")
        row = "| " + " | ".join(cells) + " |"
        return (self.table_header() + "\n" + row) if header else row


def particle_metrics(
    x_model: ArrayLike,
    e_model: ArrayLike,
    x_ref: ArrayLike,
    e_ref: ArrayLike,
    *,
    logp: ArrayLike | None = None,
    n_dof: int | None = None,
    log_w: ArrayLike | None = None,
    nfe: int | None = None,
    bins: int | np.ndarray = 100,
) -> ParticleMetrics:
    """All metrics of model samples ``x_model [B, n, d]`` with energies ``e_model [B]`` against the
    reference ``x_ref [M, n, d]``, ``e_ref [M]``.  ``logp [B']`` (any held-out or model points) gives
    ``nll`` (per dof if ``n_dof``); ``log_w [B]`` (:func:`importance_log_weights`) gives ``ess``.
    ``frac_nonfinite`` counts samples whose energy or any coordinate is non-finite."""
    e = _vec(e_model, "e_model")
    if isinstance(x_model, Tensor):
        x_model = x_model.detach().to("cpu", torch.float64).numpy()
    xm = np.asarray(x_model, dtype=np.float64)
    if xm.ndim != 3 or len(xm) != len(e):
        raise ValueError(f"x_model must be [B, n, d] with B = len(e_model) = {len(e)}, got {xm.shape}")
    bad = ~np.isfinite(e) | ~np.isfinite(xm).all(axis=(1, 2))
    return ParticleMetrics(
        energy_w1=energy_wasserstein(e, e_ref, 1),
        energy_w2=energy_wasserstein(e, e_ref, 2),
        distance_tv=distance_histogram_tv(xm, x_ref, bins=bins),
        distance_w2=distance_wasserstein(xm, x_ref, 2),
        n_samples=len(e),
        frac_nonfinite=float(bad.mean()),
        nll=None if logp is None else mean_nll(logp, n_dof=n_dof),
        ess=None if log_w is None else effective_sample_size(log_w),
        nfe=nfe,
    )
