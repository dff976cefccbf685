"""SIGTERM and Ctrl-C during training: finish the step, save, end the run as KILLED, exit with one line.

Inside :meth:`Interrupts.deferred` (one training iteration: loading the batch, the step, the ranks' agreement to
stop; under DDP also rank 0's evaluations) a signal only sets :attr:`Interrupts.signal`, so the trainer stops
between steps with a consistent state it can checkpoint; anywhere else (a single process's evaluation) it raises
:class:`TrainingInterrupted` at once.  A second signal always raises at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["Interrupts", "TrainingInterrupted"]


class TrainingInterrupted(Exception):
    """Training stopped by a signal; ``signum`` is its number (exit status ``128 + signum`` by convention)."""

    def __init__(self, signum: int, message: str = ""):
        self.signum = signum
        super().__init__(message or f"interrupted by {signal.Signals(signum).name}")


class Interrupts:
    """Catch SIGINT and SIGTERM while active (a context manager; a no-op outside the main thread)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._deferring = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self._deferring and self.signal is None:
            self.signal = signum
            return
        raise TrainingInterrupted(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Signals arriving inside this block are held until it ends."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()
