"""Progress bars that suit a terminal and a log file: a bar only when stderr is a terminal (tqdm's own check), and
nothing at all when the caller turned progress off.  Long jobs that write to a file report in lines instead (the
trainer prints one every ``train.log_every`` steps)."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

__all__ = ["progress_bar", "is_terminal"]


def is_terminal() -> bool:
    """Whether stderr, where bars go, is a terminal."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)``, shown only when ``enabled`` and stderr is a terminal."""
    return tqdm(iterable, disable=None if enabled else True, **kwargs)
