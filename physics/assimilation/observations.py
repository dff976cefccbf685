"""Observation operators ``y = A(x) + noise`` on trajectories.

A trajectory is ``x [B, L, *S]``: ``L`` states of shape ``S`` (``[D]`` for Lorenz systems, ``[n, n]`` for
vorticity fields).  An :class:`ObservationOperator` observes the states at times ``offset, offset + every,
...`` and applies the same linear map ``H [p, prod(S)]`` to each of them, then optionally an elementwise
``transform`` (``arctan``: nonlinear observations ``arctan(H x)``, as in the score-filter literature):

* ``full``       every variable / pixel;
* ``subsample``  every ``stride``-th variable (Lorenz) or pixel along both axes (fields);
* ``coarsen``    averages over ``factor x factor`` blocks (fields; for 1D states, runs of ``factor``);
* ``mask``       a fixed random ``fraction`` of the variables / pixels (seeded).

Because ``H`` is an explicit matrix, the same operator serves the diffusion posterior samplers (``A`` as a
differentiable function) and the ensemble Kalman filters (``H`` per observed time, with :attr:`obs_fn` for a
transform).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

__all__ = ["ObservationOperator", "OBSERVATION_KINDS", "OBSERVATION_TRANSFORMS", "observe"]

OBSERVATION_KINDS = ("full", "subsample", "coarsen", "mask")
#: elementwise maps applied after ``H`` (``identity``: linear observations)
OBSERVATION_TRANSFORMS = {"identity": None, "arctan": torch.atan}


@dataclass(frozen=True)
class ObservationOperator:
    """Linear observations of a trajectory (see module docstring).

    Args:
        state_shape: ``S``.
        kind: full | subsample | coarsen | mask.
        every: observe one state in ``every`` (time subsampling).
        offset: index of the first observed state.
        stride: subsample: keep every ``stride``-th variable / pixel (per axis).
        factor: coarsen: block size (per axis).
        fraction: mask: fraction of variables / pixels observed.
        seed: mask: which ones.
        transform: identity | arctan, applied to ``H x`` elementwise.
    """

    state_shape: tuple[int, ...]
    kind: str = "full"
    every: int = 1
    offset: int = 0
    stride: int = 1
    factor: int = 1
    fraction: float = 1.0
    seed: int = 0
    transform: str = "identity"

    def __post_init__(self):
        object.__setattr__(self, "state_shape", tuple(int(s) for s in self.state_shape))
        checks = [
            (self.kind in OBSERVATION_KINDS, f"unknown observation kind {self.kind!r}; choose one of {OBSERVATION_KINDS}"),
            (self.transform in OBSERVATION_TRANSFORMS,
             f"unknown observation transform {self.transform!r}; choose one of {tuple(OBSERVATION_TRANSFORMS)}"),
            (len(self.state_shape) in (1, 2), f"states must be 1D or 2D, got shape {self.state_shape}"),
            (self.every >= 1 and self.offset >= 0, "needs every >= 1 and offset >= 0"),
            (self.stride >= 1 and self.factor >= 1, "needs stride >= 1 and factor >= 1"),
            (0 < self.fraction <= 1, f"fraction must be in (0, 1], got {self.fraction}"),
            (self.kind != "coarsen" or self.factor < 1 or all(s % self.factor == 0 for s in self.state_shape),
             f"coarsen factor {self.factor} must divide the state shape {self.state_shape}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    # -- the per-state map ------------------------------------------------------------------------------
    @property
    def state_size(self) -> int:
        return math.prod(self.state_shape)

    @cached_property
    def _matrix(self) -> Tensor:
        d = self.state_size
        idx = torch.arange(d).reshape(self.state_shape)
        if self.kind == "full":
            return torch.eye(d, dtype=torch.float64)
        if self.kind == "subsample":
            sel = idx[tuple(slice(0, None, self.stride) for _ in self.state_shape)].reshape(-1)
            return torch.eye(d, dtype=torch.float64)[sel]
        if self.kind == "mask":
            g = torch.Generator().manual_seed(self.seed)
            k = max(1, round(self.fraction * d))
            sel = torch.randperm(d, generator=g)[:k].sort().values
            return torch.eye(d, dtype=torch.float64)[sel]
        # coarsen: block means
        f = self.factor
        if len(self.state_shape) == 1:
            block = idx.reshape(-1, f)
        else:
            n0, n1 = self.state_shape
            block = idx.reshape(n0 // f, f, n1 // f, f).permute(0, 2, 1, 3).reshape(-1, f * f)
        h = torch.zeros(block.shape[0], d, dtype=torch.float64)
        h.scatter_(1, block, 1.0 / block.shape[1])
        return h

    def matrix(self, dtype=torch.float64, device=None) -> Tensor:
        """``H [p, prod(S)]``: the map applied to each observed state."""
        return self._matrix.to(dtype=dtype, device=device)

    @property
    def obs_fn(self):
        """The elementwise transform after ``H`` as a function (``None`` for linear observations): the ``obs_fn``
        of the ensemble methods in :mod:`physics.assimilation.enkf`."""
        return OBSERVATION_TRANSFORMS[self.transform]

    @property
    def per_state(self) -> int:
        """``p``: values observed per observed state."""
        return self._matrix.shape[0]

    def observed_mask(self) -> Tensor:
        """``[*S]`` bool: the variables / pixels that enter some observation (for figures)."""
        return (self._matrix != 0).any(0).reshape(self.state_shape)

    # -- the trajectory operator ------------------------------------------------------------------------
    def times(self, length: int) -> list[int]:
        """Indices of the observed states of a trajectory of ``length`` states."""
        return list(range(self.offset, length, self.every))

    def describe(self, length: int) -> str:
        """What the operator observes of a trajectory of ``length`` states, in words with the shapes: e.g.
        ``"4 x 4 block means of the 64 x 64 state (16 x 16 = 256 values) at 8 of 32 states (one in 4 from state 0):
        [B, 8 x 256 = 2048]"``."""
        grid = " x ".join(map(str, self.state_shape)) if len(self.state_shape) > 1 else f"{self.state_shape[0]}-variable"
        if self.kind == "coarsen":
            what = f"{self.factor} x {self.factor} block means of the {grid} state"
            per = " x ".join(str(s // self.factor) for s in self.state_shape) + f" = {self.per_state} values"
        elif self.kind == "subsample":
            what = f"one value in {self.stride} along each axis of the {grid} state"
            per = " x ".join(str(len(range(0, s, self.stride))) for s in self.state_shape) + f" = {self.per_state} values"
        elif self.kind == "mask":
            what, per = f"a fraction {self.fraction:g} of the {grid} state", f"{self.per_state} values"
        else:
            what, per = f"the whole {grid} state", f"{self.per_state} values"
        k = len(self.times(length))
        return (f"{what} ({per}) at {k} of {length} states (one in {self.every} from state {self.offset}): "
                f"[B, {k} x {self.per_state} = {self.num_observations(length)}]")

    def num_observations(self, length: int) -> int:
        return len(self.times(length)) * self.per_state

    def __call__(self, x: Tensor) -> Tensor:
        """``A``: ``x [B, L, *S] -> [B, K * p]`` (``K`` observed times), differentiable: ``g(H x_k)`` per observed
        state."""
        nd = len(self.state_shape)
        if tuple(x.shape[-nd:]) != self.state_shape or x.dim() != nd + 2:
            raise ValueError(f"expected trajectories [B, L, {', '.join(map(str, self.state_shape))}], got {tuple(x.shape)}")
        xs = x[:, self.offset :: self.every].flatten(2)  # [B, K, d]
        if xs.shape[1] == 0:
            raise ValueError(f"no state of a length-{x.shape[1]} trajectory is observed (offset {self.offset})")
        hx = (xs @ self.matrix(x.dtype, x.device).T).flatten(1)
        return hx if self.obs_fn is None else self.obs_fn(hx)

    def split(self, y: Tensor) -> Tensor:
        """``[B, K * p] -> [B, K, p]`` (per observed time)."""
        return y.reshape(y.shape[0], -1, self.per_state)


def observe(x: Tensor, operator: ObservationOperator, noise_std: float, generator: torch.Generator) -> Tensor:
    """Noisy observations ``A(x) + noise_std * N(0, I)`` of trajectories ``x [B, L, *S]``: ``[B, K * p]``."""
    if noise_std <= 0:
        raise ValueError(f"noise_std must be > 0, got {noise_std}")
    clean = operator(x)
    return clean + noise_std * torch.randn(clean.shape, generator=generator, dtype=clean.dtype, device=generator.device).to(clean.device)
