"""Minibatch couplings for flow matching: which source sample is paired with which target sample.

Independent pairs (I-CFM) regress a velocity field whose conditional paths cross; pairing a minibatch of
``B`` sources ``x0`` with ``B`` targets ``x1`` through an optimal-transport plan straightens them:

* exact OT (OT-CFM, Tong et al. 2023; Pooladian et al. 2023): ``ot.emd`` on the squared Euclidean cost;
  for two uniform batches of equal size the plan is a permutation and every source keeps its partner;
* entropic OT (SB-CFM, Tong et al. 2023): ``ot.sinkhorn``; ``B`` pairs are drawn from the plan;
* equivariant OT (Klein, Kraemer & Noe 2023): for particle states ``[B, n, d]`` the cost of a pair is
  the squared distance after the best relabelling of the target's particles (Hungarian) and the best
  rotation (Kabsch), so that the plan -- and the returned, aligned targets -- do not depend on the
  arbitrary orientation and labelling of the samples.

Conventions: Euclidean states are ``[B, *event]`` (flattened to ``[B, D]`` for the cost); particle
states are dense ``[B, n, d]`` (the same ``n`` for every sample) and are expected to be zero-CoM -- the
centre of mass is removed before aligning.  Costs are *sums* of squared differences over all
coordinates (``|x0 - x1|^2``, not a mean).  Plans are float64 numpy ``[B0, B1]`` with total mass 1
(POT works in numpy); states go in and out as torch tensors.  Randomness only enters through an
explicit ``torch.Generator`` or ``numpy.random.Generator`` (drawing pairs from an entropic plan).

Solver failures never raise: non-finite costs, an infeasible or unconverged ``ot.emd``, a Sinkhorn
that under/overflows or does not converge fall back (with a :class:`CouplingWarning`) to the log-domain
Sinkhorn, a plan rounded onto the marginals, or the independent plan ``a b^T`` (see :func:`ot_plan`).
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .spaces import remove_com_dense

__all__ = [
    "CouplingWarning",
    "COUPLING_KINDS",
    "ot_plan",
    "independent_plan",
    "plan_cost",
    "sample_plan",
    "plan_to_permutation",
    "pair_batches",
    "sqeuclidean_cost",
    "kabsch",
    "align",
    "equivariant_cost_matrix",
    "align_source_per_graph",
    "CouplingStats",
    "Coupler",
]

COUPLING_KINDS = ("independent", "ot", "sinkhorn", "eq_ot", "eq_sinkhorn")
_START_KINDS = ("pca", "pca_permuted", "pca+identity", "identity")


class CouplingWarning(RuntimeWarning):
    """An OT solver failed or returned an unusable plan and a fallback plan was used instead."""


# ----------------------------------------------------------------------------------------------------
# Plans
# ----------------------------------------------------------------------------------------------------


def _weights(w: np.ndarray | None, n: int, name: str) -> np.ndarray:
    if w is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    if w.shape != (n,):
        raise ValueError(f"{name} has {w.shape[0]} entries, the cost matrix needs {n}")
    if not (np.isfinite(w).all() and (w >= 0).all() and w.sum() > 0):
        raise ValueError(f"{name} must be finite, non-negative and not all zero")
    return w / w.sum()


def independent_plan(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The product coupling ``a b^T`` ``[B0, B1]`` (the plan of independent pairs)."""
    return np.outer(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))


def _marginal_error(plan: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """L1 violation of both marginals (plans have total mass 1)."""
    return float(np.abs(plan.sum(1) - a).sum() + np.abs(plan.sum(0) - b).sum())


def _plan_ok(plan, a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    if plan is None:
        return False
    plan = np.asarray(plan)
    if plan.shape != (len(a), len(b)) or not np.isfinite(plan).all() or plan.min() < -1e-12:
        return False
    if not plan.sum() > 0:
        return False
    return _marginal_error(plan, a, b) <= tol


def _solve_plan(cost, a=None, b=None, *, method="exact", reg=0.05, normalize_cost=True, num_itermax=None,
                marginal_tol=1e-4, stop_thr=1e-9) -> tuple[np.ndarray, str]:
    """:func:`ot_plan` plus how it was obtained: ``"ok"``, or the fallback used: ``"sinkhorn_log"``,
    ``"rounded"`` (an unconverged Sinkhorn plan rounded onto the marginals) or ``"independent"`` (``a b^T``)."""
    import ot

    if method not in ("exact", "sinkhorn"):
        raise ValueError(f"unknown OT method {method!r}; choose 'exact' or 'sinkhorn'")
    M = np.array(cost, dtype=np.float64)  # a copy: the caller's array is never modified
    if M.ndim != 2:
        raise ValueError(f"cost must be a matrix [B0, B1], got shape {M.shape}")
    n0, n1 = M.shape
    a, b = _weights(a, n0, "a"), _weights(b, n1, "b")
    if n0 == 0 or n1 == 0:
        return np.zeros((n0, n1)), "ok"
    if not np.isfinite(M).all():
        warnings.warn(f"{int((~np.isfinite(M)).sum())} non-finite cost entries: using the independent plan",
                      CouplingWarning, stacklevel=3)
        return independent_plan(a, b), "independent"

    if method == "exact":
        # The exact plan does not change when the cost is scaled: normalize_cost is irrelevant here.
        itermax = 1_000_000 if num_itermax is None else int(num_itermax)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                plan, log = ot.emd(a, b, M, numItermax=itermax, log=True)
                problem = log.get("warning")
                if log.get("result_code", 1) != 1 and problem is None:
                    problem = f"result code {log.get('result_code')}"
            except Exception as err:  # noqa: BLE001 -- any solver failure falls back
                plan, problem = None, f"{type(err).__name__}: {err}"
        if problem is None and _plan_ok(plan, a, b, marginal_tol):
            return np.asarray(plan, dtype=np.float64), "ok"
        messages = "; ".join(str(w.message) for w in caught) or str(problem or "plan violates the marginals")
        warnings.warn(f"ot.emd failed ({messages}): using the independent plan", CouplingWarning, stacklevel=3)
        return independent_plan(a, b), "independent"

    if not reg > 0:
        raise ValueError(f"sinkhorn needs reg > 0, got {reg}")
    if normalize_cost and M.max() > 0:
        M = M / M.max()
    itermax = 1000 if num_itermax is None else int(num_itermax)
    problems = []
    usable = False
    for ot_method in ("sinkhorn", "sinkhorn_log"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if ot_method == "sinkhorn":
                    plan = ot.sinkhorn(a, b, M, reg, method="sinkhorn", numItermax=itermax, stopThr=stop_thr)
                else:
                    plan = _sinkhorn_log(a, b, M, reg, itermax, stop_thr)
                plan = np.asarray(plan, dtype=np.float64)
            except Exception as err:  # noqa: BLE001
                plan = None
                caught.append(warnings.WarningMessage(f"{type(err).__name__}: {err}", RuntimeWarning, "", 0))
        if _plan_ok(plan, a, b, marginal_tol):
            if ot_method == "sinkhorn":
                return plan, "ok"
            warnings.warn(f"plain Sinkhorn failed ({'; '.join(problems)}): used the log-domain Sinkhorn",
                          CouplingWarning, stacklevel=3)
            return np.maximum(plan, 0.0), "sinkhorn_log"
        usable = plan is not None and bool(np.isfinite(plan).all()) and plan.min() >= 0 and plan.sum() > 0
        messages = list(dict.fromkeys(str(w.message) for w in caught))
        if usable:
            messages.append("marginal error %.3g" % _marginal_error(plan, a, b))
        problems.append(f"{ot_method}: {', '.join(messages) or 'unusable plan'}")
        numerical = not usable or any(issubclass(w.category, RuntimeWarning) or "numerical errors" in str(w.message)
                                      for w in caught)
        if not numerical:
            break  # the iterations were sound, only unfinished: the log domain would not converge faster
    if usable:
        # Unconverged but sound: round onto the marginals (Altschuler, Weed & Rigollet 2017, Alg. 2)
        warnings.warn(f"Sinkhorn did not reach the marginals within num_itermax={itermax} ({'; '.join(problems)}): "
                      "rounded its plan onto them", CouplingWarning, stacklevel=3)
        return _round_to_marginals(plan, a, b), "rounded"
    warnings.warn(f"Sinkhorn failed ({'; '.join(problems)}): using the independent plan", CouplingWarning,
                  stacklevel=3)
    return independent_plan(a, b), "independent"


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def _sinkhorn_log(a: np.ndarray, b: np.ndarray, M: np.ndarray, reg: float, num_itermax: int, stop_thr: float
                  ) -> np.ndarray:
    """Log-domain Sinkhorn (the iteration of POT's ``method="sinkhorn_log"``: never under/overflows, for any
    ``reg``), vectorised numpy -- POT 0.9.7's version is 5--50x slower per iteration here.  Stops when the
    row marginal is within ``stop_thr`` (L1; the columns are exact after each sweep) or after
    ``num_itermax`` sweeps, warning ("did not converge") then."""
    with np.errstate(divide="ignore"):
        la, lb = np.log(a), np.log(b)
    K = -M / reg
    f, g = np.zeros(len(a)), np.zeros(len(b))
    for it in range(num_itermax):
        f = la - _logsumexp(K + g[None, :], 1)
        g = lb - _logsumexp(K + f[:, None], 0)
        if it % 10 == 0 or it == num_itermax - 1:
            err = np.abs(np.exp(_logsumexp(K + g[None, :], 1) + f) - a).sum()
            if err < stop_thr:
                break
    else:
        warnings.warn("log-domain Sinkhorn did not converge", UserWarning, stacklevel=2)
    return np.exp(K + f[:, None] + g[None, :])


def _round_to_marginals(plan: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The nearby plan with marginals exactly ``a, b`` (Altschuler et al. 2017): shrink rows above ``a`` and
    columns above ``b``, then add the rank-one correction ``e_a e_b^T / |e_a|_1``."""
    P = np.clip(plan, 0.0, None)
    r = P.sum(1)
    P = P * np.minimum(1.0, a / np.where(r > 0, r, 1.0))[:, None]
    c = P.sum(0)
    P = P * np.minimum(1.0, b / np.where(c > 0, c, 1.0))[None, :]
    ea, eb = np.clip(a - P.sum(1), 0, None), np.clip(b - P.sum(0), 0, None)
    if ea.sum() > 0:
        P = P + np.outer(ea, eb) / ea.sum()
    return P


def ot_plan(
    cost: np.ndarray,
    a: np.ndarray | None = None,
    b: np.ndarray | None = None,
    *,
    method: str = "exact",
    reg: float = 0.05,
    normalize_cost: bool = True,
    num_itermax: int | None = None,
    marginal_tol: float = 1e-4,
) -> np.ndarray:
    """Optimal-transport plan ``[B0, B1]`` (float64, total mass 1) for a cost matrix ``[B0, B1]``.

    Args:
        cost: transport cost ``C[i, j]`` of moving source ``i`` to target ``j`` (squared distances).
        a, b: source / target weights ``[B0]``, ``[B1]``; uniform when omitted (normalised to sum 1).
        method: ``"exact"`` -- network simplex ``ot.emd`` (no regularisation); ``"sinkhorn"`` --
            entropic OT ``ot.sinkhorn``, minimising ``<P, C'> - reg H(P)``.
        reg: entropic regularisation (Sinkhorn only), in the units of the cost actually passed to POT:
            with ``normalize_cost=True`` the cost is first divided by its maximum (``C' = C / max C``,
            torchcfm's ``OTPlanSampler(normalize_cost=True)``; scale-free, the default here) and ``reg``
            is relative to the largest cost; with ``normalize_cost=False`` it is in the units of ``C``:
            the Schroedinger-bridge coupling of SB-CFM with noise level ``sigma`` on the squared Euclidean
            cost is ``reg = 2 sigma^2, normalize_cost=False``.  (torchcfm's default is
            ``normalize_cost=False``.)
        normalize_cost: see ``reg``; ignored by ``"exact"`` (its plan does not change when C is scaled).
        num_itermax: solver iteration cap; default 1,000,000 pivots (exact), 1,000 sweeps (Sinkhorn, as POT).
        marginal_tol: largest accepted L1 violation of the two marginals (total mass 1) before falling back.

    Failures never raise, they fall back with a :class:`CouplingWarning`:

    * non-finite cost entries: the independent plan ``a b^T``;
    * ``ot.emd`` infeasible, stopped at ``num_itermax`` (its plan then violates the marginals) or raising:
      ``a b^T``;
    * plain Sinkhorn that under/overflows (small ``reg``: ``exp(-C / reg) = 0``), returns a non-finite or
      all-zero plan, or raises: retried in the log domain (stable for any ``reg``; our vectorised numpy
      loop, POT's ``method="sinkhorn_log"`` being much slower here); a Sinkhorn that is sound but has not
      reached ``marginal_tol`` after ``num_itermax`` sweeps is rounded onto the marginals (Altschuler,
      Weed & Rigollet 2017, Alg. 2: the result has the exact marginals); ``a b^T`` if nothing usable is left.
    """
    return _solve_plan(cost, a, b, method=method, reg=reg, normalize_cost=normalize_cost,
                       num_itermax=num_itermax, marginal_tol=marginal_tol)[0]


def plan_cost(plan: np.ndarray, cost: np.ndarray) -> float:
    """Expected cost ``sum_ij P_ij C_ij`` of a plan (total mass 1: the mean cost per transported sample)."""
    return float((np.asarray(plan, dtype=np.float64) * np.asarray(cost, dtype=np.float64)).sum())


def _uniform(n: int, generator) -> Tensor:
    """``n`` float64 uniforms on [0, 1) from a torch or numpy generator."""
    if isinstance(generator, np.random.Generator):
        return torch.from_numpy(generator.random(n))
    if isinstance(generator, torch.Generator):
        return torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device).cpu()
    raise TypeError("sampling from a plan needs an explicit torch.Generator or numpy.random.Generator, "
                    f"got {type(generator).__name__}")


def sample_plan(plan: np.ndarray, n_pairs: int, generator: torch.Generator | np.random.Generator
                ) -> tuple[Tensor, Tensor]:
    """Draw ``n_pairs`` index pairs ``(i [n], j [n])`` (int64, CPU) i.i.d. from the plan ``[B0, B1]``.

    Like torchcfm's ``OTPlanSampler.sample_map``: the flattened plan (normalised to sum 1) is a categorical
    distribution over pairs, sampled with replacement (inverse CDF, so any plan size works); entries that
    are zero are never drawn.
    """
    P = np.asarray(plan, dtype=np.float64)
    if P.ndim != 2 or P.size == 0:
        raise ValueError(f"plan must be a non-empty matrix, got shape {P.shape}")
    p = torch.from_numpy(np.clip(P, 0.0, None).reshape(-1))
    cdf = torch.cumsum(p, 0)
    total = cdf[-1]
    if not (torch.isfinite(total) and total > 0):
        raise ValueError("plan must be finite with positive mass")
    u = _uniform(int(n_pairs), generator) * total
    flat = torch.searchsorted(cdf, u, right=True)
    # u < total in exact arithmetic; a rounding u == total must not pick a trailing zero entry
    flat = flat.clamp(max=int(torch.nonzero(p).max()))
    return flat // P.shape[1], flat % P.shape[1]


def plan_to_permutation(plan: np.ndarray, rtol: float = 1e-6) -> np.ndarray | None:
    """``perm [B]`` with ``plan[i, perm[i]] = 1 / B`` when the plan ``[B, B]`` is a scaled permutation matrix
    (every exact plan of two uniform batches of equal size is: a vertex of the Birkhoff polytope), else None."""
    P = np.asarray(plan, dtype=np.float64)
    if P.ndim != 2 or P.shape[0] != P.shape[1] or P.shape[0] == 0 or not np.isfinite(P).all():
        return None
    B = P.shape[0]
    perm = P.argmax(1)
    if np.unique(perm).size != B:
        return None
    total = P.sum()
    diag = P[np.arange(B), perm]
    if total <= 0 or np.abs(diag - total / B).max() > rtol * total / B or total - diag.sum() > rtol * total:
        return None
    return perm


def pair_batches(plan: np.ndarray, generator: torch.Generator | np.random.Generator | None = None, *,
                 n_pairs: int | None = None) -> tuple[Tensor, Tensor]:
    """Index pairs ``(i [n], j [n])`` realising a plan ``[B0, B1]`` on a minibatch.

    A permutation plan (exact OT of two uniform equal-size batches) pairs every source with its matched
    target: ``i = arange(B), j = perm`` -- no resampling, each sample used once.  Any other plan is
    sampled with :func:`sample_plan` (``n_pairs`` pairs, default ``B0``; needs ``generator``).
    """
    perm = plan_to_permutation(plan)
    if perm is not None and (n_pairs is None or n_pairs == len(perm)):
        return torch.arange(len(perm)), torch.from_numpy(perm).long()
    if generator is None:
        raise ValueError("this plan is not a permutation: drawing pairs from it needs a generator")
    return sample_plan(plan, plan.shape[0] if n_pairs is None else n_pairs, generator)


def sqeuclidean_cost(x0: Tensor, x1: Tensor) -> np.ndarray:
    """Squared Euclidean cost ``|x0[i] - x1[j]|^2`` of flattened states ``[B0, *event], [B1, *event]``
    -> float64 numpy ``[B0, B1]``."""
    a = x0.detach().reshape(x0.shape[0], -1).to("cpu", torch.float64)
    b = x1.detach().reshape(x1.shape[0], -1).to("cpu", torch.float64)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"event size mismatch: {tuple(x0.shape[1:])} vs {tuple(x1.shape[1:])}")
    C = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return C.clamp_(min=0.0).numpy()


# ----------------------------------------------------------------------------------------------------
# Equivariant alignment: permutation (Hungarian) x rotation (Kabsch)
# ----------------------------------------------------------------------------------------------------


def _kabsch_np(H: np.ndarray, reflections: bool) -> tuple[np.ndarray, np.ndarray]:
    """Orthogonal ``Q [..., d, d]`` maximising ``tr(X^T Y Q)`` for ``H = Y^T X [..., d, d]`` (``Y Q ~ X``),
    and that maximal trace ``[...]``.  ``det Q = +1`` unless ``reflections``."""
    U, s, Vt = np.linalg.svd(H)
    if reflections:
        return U @ Vt, s.sum(-1)
    sign = np.where(np.linalg.det(U) * np.linalg.det(Vt) < 0, -1.0, 1.0)
    U[..., :, -1] *= sign[..., None]
    return U @ Vt, s[..., :-1].sum(-1) + sign * s[..., -1]


def kabsch(x: Tensor, y: Tensor, *, reflections: bool = False) -> Tensor:
    """Kabsch: the orthogonal ``R [..., d, d]`` minimising ``sum_a |x_a - R y_a|^2`` for matched point sets
    ``x, y [..., n, d]`` (no centring, no relabelling; batched over leading dims).  Apply it as
    ``y @ R.transpose(-1, -2)``.  ``det R = +1`` unless ``reflections``."""
    X = x.detach().to("cpu", torch.float64).numpy()
    Y = y.detach().to("cpu", torch.float64).numpy()
    Q, _ = _kabsch_np(np.swapaxes(Y, -1, -2) @ X, reflections)
    return torch.from_numpy(np.ascontiguousarray(np.swapaxes(Q, -1, -2))).to(x.device, x.dtype)


def _principal_frames(xc: np.ndarray) -> np.ndarray:
    """Principal axes ``U [B, d, d]`` (columns, ascending variance) of centred clouds ``[B, n, d]``, with
    ``det U = +1``."""
    _, U = np.linalg.eigh(np.swapaxes(xc, -1, -2) @ xc)
    U = U.copy()
    U[..., :, -1] *= np.where(np.linalg.det(U) < 0, -1.0, 1.0)[:, None]
    return U


def _start_rotations(d: int, reflections: bool, starts: str) -> np.ndarray:
    """Initial rotations ``[S, d, d]`` expressed between principal frames: the diagonal sign matrices
    (``"pca"``: ``2^(d-1)`` with det +1, all ``2^d`` with reflections) or the signed permutation matrices
    (``"pca_permuted"``: ``d! 2^(d-1)``, resp. ``d! 2^d``).  Both are groups containing every sign flip
    allowed, which is what makes the set of starts independent of the eigenvectors' arbitrary signs."""
    perms = list(itertools.permutations(range(d))) if starts == "pca_permuted" else [tuple(range(d))]
    mats = []
    for p in perms:
        for signs in itertools.product((1.0, -1.0), repeat=d):
            m = np.zeros((d, d))
            m[np.arange(d), p] = signs
            if reflections or np.linalg.det(m) > 0:
                mats.append(m)
    return np.stack(mats)


def _alternate(X: np.ndarray, Y: np.ndarray, Q: np.ndarray, iterations: int, reflections: bool):
    """Alternate Hungarian (given the rotation) and Kabsch (given the labels) on ``M`` problems
    ``X, Y [M, n, d]`` (centred) from rotations ``Q [M, d, d]`` (``Y[perm] @ Q ~ X``).

    Each step minimises the cost over one factor with the other fixed, so the cost never increases; a
    problem stops when the Hungarian step returns the labelling it already had.  Returns
    ``cost [M], perm [M, n], Q [M, d, d]``.
    """
    from scipy.optimize import linear_sum_assignment

    M, n, _ = X.shape
    sqx, sqy = (X * X).sum(2), (Y * Y).sum(2)
    base = sqx.sum(1) + sqy.sum(1)
    cost = base.copy()
    perm = np.broadcast_to(np.arange(n), (M, n)).copy()
    Q = Q.copy()
    active = np.arange(M)
    for it in range(max(int(iterations), 1)):
        Xa, Ya = X[active], Y[active]
        # Hungarian on the squared distances |x_a - y_b Q|^2 (scipy solves these ~2x faster than the
        # equivalent "maximise x_a . y_b Q" at n = 55)
        D = sqx[active][:, :, None] + sqy[active][:, None, :] - 2.0 * (Xa @ np.swapaxes(Ya @ Q[active], 1, 2))
        new = np.empty((len(active), n), dtype=np.intp)
        for k in range(len(active)):
            new[k] = linear_sum_assignment(D[k])[1]
        if it > 0:
            moved = (new != perm[active]).any(1)
            active, new, Xa, Ya = active[moved], new[moved], Xa[moved], Ya[moved]
            if not len(active):
                break
        perm[active] = new
        Yp = np.take_along_axis(Ya, new[:, :, None], axis=1)
        Q[active], trace = _kabsch_np(np.swapaxes(Yp, 1, 2) @ Xa, reflections)
        cost[active] = base[active] - 2.0 * trace
    return np.maximum(cost, 0.0), perm, Q


def _equivariant_solve(x0: np.ndarray, x1: np.ndarray, *, reflections=False, starts="pca", iterations=10,
                       chunk_bytes=2**25):
    """Best alignment of every pair ``(x0[i], x1[j])`` of centred clouds ``[B0, n, d], [B1, n, d]``:
    ``cost [B0, B1]``, ``perm [B0, B1, n]``, ``Q [B0, B1, d, d]`` with ``x1[j][perm[i, j]] @ Q[i, j] ~ x0[i]``."""
    if starts not in _START_KINDS:
        raise ValueError(f"unknown starts {starts!r}; choose one of {_START_KINDS}")
    B0, n, d = x0.shape
    B1 = x1.shape[0]
    pca = starts != "identity"
    if pca:
        U0, U1 = _principal_frames(x0), _principal_frames(x1)
        G = _start_rotations(d, reflections, "pca" if starts == "pca+identity" else starts)
    S = (len(G) if pca else 0) + (starts in ("identity", "pca+identity"))
    P = B0 * B1
    cost = np.empty(P)
    perm = np.empty((P, n), dtype=np.intp)
    Q = np.empty((P, d, d))
    per_chunk = max(1, chunk_bytes // (8 * S * max(n * n, 4 * n * d)))
    for lo in range(0, P, per_chunk):
        idx = np.arange(lo, min(lo + per_chunk, P))
        I, J = idx // B1, idx % B1
        Q0 = []
        if pca:
            # y -> its principal frame -> a sign flip / axis permutation -> x's principal frame.  The set
            # of starts turns with either cloud, so the result is invariant to rotating either.
            Q0.append(U1[J][:, None] @ G[None] @ np.swapaxes(U0[I], 1, 2)[:, None])
        if starts in ("identity", "pca+identity"):
            Q0.append(np.broadcast_to(np.eye(d), (len(idx), 1, d, d)))
        Q0 = np.concatenate(Q0, axis=1).reshape(-1, d, d)
        X = np.repeat(x0[I], S, axis=0)
        Y = np.repeat(x1[J], S, axis=0)
        c, p, q = _alternate(X, Y, Q0, iterations, reflections)
        best = c.reshape(-1, S).argmin(1)
        pick = np.arange(len(idx)) * S + best
        cost[idx], perm[idx], Q[idx] = c[pick], p[pick], q[pick]
    return cost.reshape(B0, B1), perm.reshape(B0, B1, n), Q.reshape(B0, B1, d, d)


def _as_clouds(x: Tensor, name: str) -> np.ndarray:
    if x.dim() != 3:
        raise ValueError(f"{name} must be dense particle states [B, n, d], got shape {tuple(x.shape)}")
    return x.detach().to("cpu", torch.float64).numpy()


def align(x: Tensor, y: Tensor, *, reflections: bool = False, starts: str = "pca", iterations: int = 10
          ) -> tuple[Tensor, float]:
    """Relabel and rotate the cloud ``y [n, d]`` onto ``x [n, d]``: ``(y_aligned [n, d], cost)``.

    Both clouds are centred first; ``y_aligned = R P (y - com(y)) + com(x)`` and
    ``cost = |x - y_aligned|^2`` (sum over particles and coordinates).  See :func:`equivariant_cost_matrix`
    for the search (``starts``, ``iterations``, ``reflections``).
    """
    if x.dim() != 2 or x.shape != y.shape:
        raise ValueError(f"align needs two clouds [n, d] of the same shape, got {tuple(x.shape)}, {tuple(y.shape)}")
    cost, aligned = equivariant_cost_matrix(x[None], y[None], reflections=reflections, starts=starts,
                                            iterations=iterations)
    return aligned[0, 0], float(cost[0, 0])


def _apply(x0: np.ndarray, x1: np.ndarray, perm: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """``x1c[perm] @ Q + com(x0)`` for matching leading dims: ``x0, x1 [..., n, d]``."""
    y = np.take_along_axis(remove_com_dense(x1), perm[..., None], axis=-2) @ Q
    return y + x0.mean(-2, keepdims=True)


def equivariant_cost_matrix(
    x0: Tensor,
    x1: Tensor,
    *,
    reflections: bool = False,
    starts: str = "pca",
    iterations: int = 10,
    return_aligned: bool = True,
) -> tuple[np.ndarray, Tensor | None]:
    """E(d) x S(n)-invariant cost between particle states (Klein, Kraemer & Noe 2023).

    ``cost[i, j] = min over permutations P and rotations R of |x0c[i] - R P x1c[j]|^2`` (``c`` = centred:
    states are meant to be zero-CoM and translations are removed first), found by alternating the
    Hungarian algorithm (``scipy.optimize.linear_sum_assignment`` on squared distances, given R) and
    Kabsch (given P) until the labelling stops changing or ``iterations`` rounds are done; each step
    cannot increase the cost.  The alternation is a local search: it is run from several initial
    rotations and the best result is kept.

    Args:
        x0: ``[B0, n, d]`` sources; x1: ``[B1, n, d]`` targets.
        reflections: allow improper rotations (O(d) instead of SO(d)).
        starts: initial rotations.  ``"pca"`` -- map y's principal axes onto x's with every sign choice
            of the axes (``2^(d-1)`` starts for rotations, ``2^d`` with reflections).  This set of starts
            turns with either cloud and ignores labels, so the cost is invariant (to rounding) under
            rotating or relabelling either side, and an exact rotated + permuted copy is recovered with
            cost 0 (for clouds with distinct principal variances).  ``"pca_permuted"`` -- also every
            permutation of the axes (``d! 2^(d-1)`` starts: 4 in 2D, 24 in 3D); equally invariant, ~6x
            slower in 3D and much closer to the global minimum (see below).  ``"pca+identity"`` --
            ``"pca"`` plus ``R = 1``: never worse than the unaligned cost ``|x0c - x1c|^2``, but no longer
            exactly invariant (the identity start is not).  ``"identity"`` -- that start only (cheapest).
        iterations: most Hungarian + Kabsch rounds per start (most pairs stop after 2--4).
        return_aligned: also return the aligned targets.

    Returns:
        ``cost`` float64 numpy ``[B0, B1]`` and ``aligned [B0, B1, n, d]`` (dtype/device of ``x1``):
        ``aligned[i, j] = R P x1c[j] + com(x0[i])`` is ``x1[j]`` aligned onto ``x0[i]``, so that
        ``cost[i, j] = |x0[i] - aligned[i, j]|^2``.  Non-finite states raise ``ValueError`` (the
        :class:`Coupler` falls back to independent pairs instead).

    The search is local: on Gaussian clouds (both sides random, where local minima abound) ``"pca"`` misses
    the global minimum (brute force over all n! labellings, n <= 7) for 15-40% of the pairs, by 4-8% of
    the cost on average in 3D; ``"pca_permuted"`` for 2-20% of the pairs, by <= 1% on average (and it
    finds the lowest cost of all variants for n = 13 and 55).  Exact copies are always recovered.

    Cost of one call, ``x0, x1 [B, n, d]`` Gaussian, float64, ``iterations=10``, aligned targets included,
    measured on a shared 2-core AMD EPYC CPU, one thread (process CPU seconds; wall clock was 1.1-1.5x
    that under load).  ``B^2`` pairs x starts x ~2-4 Hungarian calls each: scipy's
    ``linear_sum_assignment`` dominates (~4 us at n = 4, ~12 us at n = 13, ~50-150 us at n = 55)::

        starts           n=4, d=2         n=13, d=3        n=55, d=3
                         B=64   B=128     B=64   B=128     B=64    B=128
        "identity"  (1)  0.05   0.21 s    0.15   0.63 s    3.0     11.6 s
        "pca"    (2, 4)  0.09   0.30 s    0.56   2.2 s     11      41 s
        "pca_permuted"   0.12   0.54 s    3.6    14 s      70      (~280) s
                 (4, 24)

    (starts per pair in parentheses: 2D, 3D.)  Capping ``iterations`` trades accuracy for time: at n = 55
    (``"pca"``) ``iterations=3`` is 1.7x faster for a 2% higher mean cost, ``iterations=1`` (one Hungarian
    + Kabsch per start) 4x faster for +6%.
    """
    X0, X1 = _as_clouds(x0, "x0"), _as_clouds(x1, "x1")
    if X0.shape[1:] != X1.shape[1:]:
        raise ValueError(f"particle shapes differ: {X0.shape[1:]} vs {X1.shape[1:]}")
    if not (np.isfinite(X0).all() and np.isfinite(X1).all()):
        raise ValueError("equivariant_cost_matrix needs finite states")
    cost, perm, Q = _equivariant_solve(remove_com_dense(X0), remove_com_dense(X1), reflections=reflections, starts=starts,
                                       iterations=iterations)
    if not return_aligned:
        return cost, None
    aligned = _apply(X0[:, None], X1[None], perm, Q)
    return cost, torch.from_numpy(aligned).to(x1.device, x1.dtype)


def align_source_per_graph(data: Tensor, source: Tensor, batch: Tensor, num_graphs: int, *,
                           iterations: int = 3, reflections: bool = False) -> Tensor:
    """Equivariant OT within each graph of a concatenated batch: relabel and rotate each graph's source
    points onto its data points (Hungarian + Kabsch, alternated from the identity, as in
    :func:`equivariant_cost_matrix` with ``starts="identity"``), pairing every graph with its own source.

    This is the per-molecule coupling of molecular flow matching (SemlaFlow, EquiFM): the source is an
    isotropic Gaussian whose points are exchangeable, so any relabelling and rotation of a source draw is an
    equally likely draw, and aligning it shortens the conditional paths.  Categorical source tokens are
    exchangeable too and need no relabelling.  Graphs of equal size are solved together.

    Args:
        data, source: ``[N, d]`` positions of ``num_graphs`` graphs (``batch [N]``, sorted), zero-CoM per graph.
    Returns:
        the aligned source ``[N, d]`` (same dtype/device, zero-CoM per graph, no gradient).
    """
    if data.shape != source.shape or data.dim() != 2:
        raise ValueError(f"data and source must be [N, d] of one shape, got {tuple(data.shape)}, {tuple(source.shape)}")
    X = data.detach().to("cpu", torch.float64).numpy()
    Y = source.detach().to("cpu", torch.float64).numpy()
    b = batch.detach().cpu().numpy()
    counts = np.bincount(b, minlength=num_graphs)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = Y.copy()
    d = X.shape[1]
    for n in np.unique(counts):
        if n < 2:
            continue
        g = np.nonzero(counts == n)[0]
        idx = starts[g][:, None] + np.arange(n)[None]  # [M, n] node rows
        Xg, Yg = remove_com_dense(X[idx]), remove_com_dense(Y[idx])
        _, perm, Q = _alternate(Xg, Yg, np.broadcast_to(np.eye(d), (len(g), d, d)), iterations, reflections)
        out[idx] = np.take_along_axis(Yg, perm[:, :, None], axis=1) @ Q
    return torch.from_numpy(out).to(source.device, source.dtype)


# ----------------------------------------------------------------------------------------------------
# The coupler used by training code
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CouplingStats:
    """What one :class:`Coupler` call did (for logging).

    Attributes:
        plan_cost: expected cost under the plan, ``sum P_ij C_ij`` (mean cost per pair).
        pair_cost: mean cost of the returned pairs (equals ``plan_cost`` for exact OT).
        independent_cost: mean cost of independent pairs, ``mean C_ij`` (for "independent": the mean cost
            of the given pairs).
        fallback: ``""`` if the solver succeeded, else the fallback used (``"sinkhorn_log"``, ``"rounded"``,
            ``"independent"``; see :func:`ot_plan`).
    """

    plan_cost: float
    pair_cost: float
    independent_cost: float
    fallback: str = ""


@dataclass
class Coupler:
    """Pair a minibatch of sources ``x0`` with targets ``x1`` (same batch size ``B``) for flow matching.

    ``kind``:
        * ``"independent"`` -- the inputs unchanged (I-CFM);
        * ``"ot"`` -- exact OT on the squared Euclidean cost of the flattened states (OT-CFM): ``x1`` is
          permuted so that ``x1_paired[i]`` is the partner of ``x0[i]`` (each sample used once);
        * ``"sinkhorn"`` -- entropic OT (SB-CFM); ``B`` pairs drawn from the plan with replacement
          (needs ``generator``).  ``reg`` / ``normalize_cost`` as in :func:`ot_plan`: SB-CFM with noise
          ``sigma`` is ``reg=2*sigma**2, normalize_cost=False``;
        * ``"eq_ot"`` / ``"eq_sinkhorn"`` -- the same on the rotation- and permutation-invariant cost of
          particle states ``[B, n, d]`` (:func:`equivariant_cost_matrix`; ``reflections``, ``starts`` and
          ``iterations`` are passed on), and the target of each pair is returned *aligned* onto its source,
          ``R P (x1[j] - com) + com(x0[i])`` (equivariant OT flow matching).  All ``B^2`` pairs are
          aligned on the CPU: see the timings there (seconds per batch beyond a few dozen particles).

    ``coupler(x0, x1, generator) -> (x0_paired, x1_paired)``; no gradient flows through the pairing of
    the ``eq_*`` targets (they are rebuilt from numpy).  After a call ``coupler.last`` holds
    :class:`CouplingStats`.  If a solver fails the plan is the independent one (with a
    :class:`CouplingWarning`) and the inputs are returned unchanged.
    """

    kind: str = "independent"
    reg: float = 0.05
    normalize_cost: bool = True
    reflections: bool = False
    starts: str = "pca"
    iterations: int = 10
    num_itermax: int | None = None
    last: CouplingStats | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.kind not in COUPLING_KINDS:
            raise ValueError(f"unknown coupling kind {self.kind!r}; choose one of {COUPLING_KINDS}")
        if self.starts not in _START_KINDS:
            raise ValueError(f"unknown starts {self.starts!r}; choose one of {_START_KINDS}")

    def __call__(self, x0: Tensor, x1: Tensor, generator: torch.Generator | np.random.Generator | None = None
                 ) -> tuple[Tensor, Tensor]:
        if x0.shape[0] != x1.shape[0]:
            raise ValueError(f"batch sizes differ: {x0.shape[0]} vs {x1.shape[0]}")
        B = x0.shape[0]
        if self.kind.endswith("sinkhorn") and generator is None:
            raise ValueError(f"coupling {self.kind!r} draws pairs from its plan: pass a generator")
        if self.kind == "independent" or B == 0:
            with torch.no_grad():
                c = (x0 - x1).reshape(B, -1).double().pow(2).sum(1).mean().item() if B else math.nan
            self.last = CouplingStats(c, c, c)
            return x0, x1
        equivariant = self.kind.startswith("eq_")
        if equivariant:
            X0, X1 = _as_clouds(x0, "x0"), _as_clouds(x1, "x1")
            if X0.shape[1:] != X1.shape[1:]:
                raise ValueError(f"particle shapes differ: {X0.shape[1:]} vs {X1.shape[1:]}")
            if np.isfinite(X0).all() and np.isfinite(X1).all():
                C, perm, Q = _equivariant_solve(remove_com_dense(X0), remove_com_dense(X1), reflections=self.reflections,
                                                starts=self.starts, iterations=self.iterations)
            else:
                C = np.full((B, B), np.nan)  # ot_plan falls back to the independent plan, with a warning
        else:
            C = sqeuclidean_cost(x0, x1)
        method = "exact" if self.kind.endswith("ot") else "sinkhorn"
        plan, status = _solve_plan(C, method=method, reg=self.reg, normalize_cost=self.normalize_cost,
                                   num_itermax=self.num_itermax)
        fallback = "" if status == "ok" else status
        finite = np.isfinite(C)
        indep = float(C.mean()) if finite.all() else math.nan
        if status == "independent":
            # the inputs are independent draws already: keep every sample once instead of resampling
            pair = float(np.diag(C).mean()) if finite.all() else math.nan
            self.last = CouplingStats(indep, pair, indep, fallback)
            return x0, x1
        i, j = pair_batches(plan, generator, n_pairs=B)
        pair = float(C[i.numpy(), j.numpy()].mean())
        self.last = CouplingStats(plan_cost(plan, C), pair, indep, fallback)
        ii, jj = i.to(x0.device), j.to(x1.device)
        if not equivariant:
            return x0[ii], x1[jj]
        iv, jv = i.numpy(), j.numpy()
        aligned = _apply(X0[iv], X1[jv], perm[iv, jv], Q[iv, jv])
        return x0[ii], torch.from_numpy(aligned).to(x1.device, x1.dtype)
