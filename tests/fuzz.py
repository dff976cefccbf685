"""Shared settings of the property-based fuzz tests (Hypothesis): a bounded run in the default suite, and a slow
profile with many more examples (``pytest -m slow``).  :func:`fuzz_tests` makes both tests from one property.

Every example runs under :func:`memory_cap`: a reader that sizes an allocation from a number in a small file (the
way ASE once allocated 22 GB for ``pos:R:3999999999``) fails the test with a ``MemoryError`` instead of taking
the machine down; :func:`not_from_memory` keeps a reader from passing such an error off as a bad-file error."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

#: examples per reader in the default suite / under ``-m slow``
DEFAULT_EXAMPLES, SLOW_EXAMPLES = 60, 1500

_common = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}


#: address space an example may add to the process
MEMORY_CAP = 2 << 30


@contextlib.contextmanager
def memory_cap(extra: int = MEMORY_CAP) -> Iterator[None]:
    """Lower the soft address-space limit to the current size plus ``extra`` bytes while the block runs (Linux;
    elsewhere nothing is capped), then restore it."""
    try:
        import resource

        with open("/proc/self/status") as f:
            size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    except (ImportError, OSError, StopIteration, ValueError):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + extra if hard == resource.RLIM_INFINITY else min(size + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def not_from_memory(error: BaseException) -> None:
    """Fail if ``error`` (a reader's own error type) was caused, anywhere down its chain, by a ``MemoryError``."""
    seen = error
    while seen is not None:
        if isinstance(seen, MemoryError):
            pytest.fail(f"the reader ran out of memory on a small file (capped at +{MEMORY_CAP >> 30} GiB): {error}")
        seen = seen.__cause__ or seen.__context__


def fuzz_tests(strategy, check):
    """``(test, slow_test)``: ``check(example)`` for examples of ``strategy``, ``DEFAULT_EXAMPLES`` of them
    (derandomised: the same every run) and ``SLOW_EXAMPLES`` (random) under the ``slow`` marker."""

    @settings(max_examples=DEFAULT_EXAMPLES, derandomize=True, **_common)
    @given(strategy)
    def test(example):
        with memory_cap():
            check(example)

    @pytest.mark.slow
    @settings(max_examples=SLOW_EXAMPLES, **_common)
    @given(strategy)
    def slow_test(example):
        with memory_cap():
            check(example)

    return test, slow_test
