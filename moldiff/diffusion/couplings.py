"""Minibatch couplings for flow matching: which source sample is paired with which target sample.

Independent pairs (I-CFM) regress a velocity field whose conditional paths cross; pairing a minibatch of
``B`` sources ``x0`` with ``B`` targets ``x1`` through an optimal-transport plan straightens them:

* exact OT (OT-CFM, Tong et al. 2023; Pooladian et al. 2023): ``ot.emd`` on the squared Euclidean cost;
  for two uniform batches of equal size the plan is a permutation and every source keeps its partner;
* entropic OT (SB-CFM, Tong et al. 2023): ``ot.sinkhorn``; ``B`` pairs are drawn from the plan;
* equivariant OT (Klein, Kraemer & Noe 2023): for particle states ``[B, n, d]`` the cost of a pair is
  the squared distance after the best relabelling of the target's particles (Hungarian) and the best
  rotation (Kabsch), so that the plan -- and the returned, aligned targets -- do not depend on the
  arbitrary orientation and labelling of the samples (the alignment lives in :mod:`moldiff.diffusion.alignment`).

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

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .alignment import START_KINDS, apply_alignment, as_clouds, equivariant_solve, align_pairs, equivariant_cost_matrix
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
    "CouplingStats",
    "Coupler",
]

COUPLING_KINDS = ("independent", "ot", "sinkhorn", "eq_ot", "eq_sinkhorn")


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
        a: source weights ``[B0]``; uniform when omitted (normalised to sum 1).
        b: target weights ``[B1]``; likewise.
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
          ``refine_starts`` makes it two-pass: the plan is solved on a coarse search of all pairs (e.g.
          ``starts="skew", iterations=1``: one Hungarian + Kabsch per pair), and only the ``B`` pairs it selects
          are re-aligned with ``refine_starts`` / ``refine_iterations`` (e.g. ``"pca"``, 3); both passes are
          rotation- and permutation-invariant.  ``benchmarks/results/coupling_speed.md`` measures the time and
          the pair cost of each choice.

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
    refine_starts: str = ""
    refine_iterations: int = 10
    num_itermax: int | None = None
    last: CouplingStats | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.kind not in COUPLING_KINDS:
            raise ValueError(f"unknown coupling kind {self.kind!r}; choose one of {COUPLING_KINDS}")
        for name, value in (("starts", self.starts), ("refine_starts", self.refine_starts or "pca")):
            if value not in START_KINDS:
                raise ValueError(f"unknown {name} {value!r}; choose one of {START_KINDS}")

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
            X0, X1 = as_clouds(x0, "x0"), as_clouds(x1, "x1")
            if X0.shape[1:] != X1.shape[1:]:
                raise ValueError(f"particle shapes differ: {X0.shape[1:]} vs {X1.shape[1:]}")
            if np.isfinite(X0).all() and np.isfinite(X1).all():
                C, perm, Q = equivariant_solve(remove_com_dense(X0), remove_com_dense(X1), reflections=self.reflections,
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
        iv, jv = i.numpy(), j.numpy()
        pair_costs = C[iv, jv]
        if equivariant:
            p, q = perm[iv, jv], Q[iv, jv]
            if self.refine_starts:
                pair_costs, p, q = align_pairs(remove_com_dense(X0[iv]), remove_com_dense(X1[jv]),
                                               reflections=self.reflections, starts=self.refine_starts,
                                               iterations=self.refine_iterations)
        self.last = CouplingStats(plan_cost(plan, C), float(pair_costs.mean()), indep, fallback)
        ii, jj = i.to(x0.device), j.to(x1.device)
        if not equivariant:
            return x0[ii], x1[jj]
        aligned = apply_alignment(X0[iv], X1[jv], p, q)
        return x0[ii], torch.from_numpy(aligned).to(x1.device, x1.dtype)
