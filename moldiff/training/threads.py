"""How many CPU threads a training run uses, on a machine it may share.

Measured on this project's 2-core CPU (``benchmarks/results/thread_contention.md``): torch's default of one
OpenMP thread per core, with OpenMP's spin-waiting, made four concurrent small trainings 20x slower than one alone;
one thread each made them 2x slower (the floor on two cores); a large network (QM9) trains 1.7x faster on two
threads than on one when alone.  No fixed count serves both, so by default the trainer measures:

* OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE``, set by ``import moldiff`` -- ``moldiff/__init__.py``
  -- unless already set, before torch starts OpenMP): a waiting thread sleeps instead of spinning on a core another
  process needs.
* :class:`ThreadTuner` alternates one thread and the process's thread count over a few steps, keeps the faster,
  and measures again every few minutes, so a run that starts alone and is joined later adapts.

An explicit count always wins: ``--threads N``, ``train.threads: N``, ``OMP_NUM_THREADS`` or ``MOLDIFF_THREADS``
in the environment, or a ``torch.set_num_threads`` call that lowered the count before training.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

__all__ = ["ThreadTuner", "explicit_threads"]


def explicit_threads(configured: int = 0) -> int | None:
    """The thread count a user fixed (``configured`` > 0, else ``MOLDIFF_THREADS`` or ``OMP_NUM_THREADS``), or
    None when it is for moldiff to choose."""
    if configured > 0:
        return configured
    for var in ("MOLDIFF_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


class ThreadTuner:
    """Chooses torch's intra-op thread count while a CPU training runs (module docstring).

    Call :meth:`before_step` before and :meth:`after_step` after each optimiser step.  After ``warmup`` steps it
    alternates the candidate counts step by step for ``probe`` steps each (alternation spreads the batches' varying
    cost over both), keeps the one with the lower median step time, and probes again ``every`` seconds later.
    :attr:`choice` is the count in force; :attr:`history` the decisions ``(step, threads, {count: median s})``.
    """

    def __init__(self, candidates: tuple[int, ...], *, warmup: int = 2, probe: int = 6, every: float = 300.0,
                 clock=time.perf_counter):
        self.candidates = tuple(sorted(set(candidates)))
        if not self.candidates or min(self.candidates) < 1:
            raise ValueError(f"thread candidates must be >= 1, got {candidates}")
        self.warmup, self.probe, self.every, self.clock = warmup, probe, every, clock
        self.choice = max(self.candidates)
        self.history: list[tuple[int, int, dict[int, float]]] = []
        self._steps = 0
        self._times: dict[int, list[float]] = {}
        self._probing_from: int | None = None
        self._next_probe = 0.0
        self._t0 = 0.0
        self._current = self.choice

    @property
    def active(self) -> bool:
        return len(self.candidates) > 1

    def before_step(self) -> None:
        if not self.active:
            return
        if self._probing_from is None and self._steps >= self.warmup and self.clock() >= self._next_probe:
            self._probing_from, self._times = self._steps, {c: [] for c in self.candidates}
        if self._probing_from is not None:
            k = self._steps - self._probing_from
            self._current = self.candidates[k % len(self.candidates)]
        else:
            self._current = self.choice
        if torch.get_num_threads() != self._current:
            torch.set_num_threads(self._current)
        self._t0 = self.clock()

    def after_step(self) -> int | None:
        """Record the step; returns the new choice when a probe just ended (else None)."""
        if not self.active:
            return None
        seconds = self.clock() - self._t0
        self._steps += 1
        if self._probing_from is None:
            return None
        self._times[self._current].append(seconds)
        if all(len(v) >= self.probe for v in self._times.values()):
            medians = {c: statistics.median(v) for c, v in self._times.items()}
            self.choice = min(medians, key=lambda c: (medians[c], c))  # ties: fewer threads
            self.history.append((self._steps, self.choice, medians))
            self._probing_from, self._next_probe = None, self.clock() + self.every
            torch.set_num_threads(self.choice)
            return self.choice
        return None
