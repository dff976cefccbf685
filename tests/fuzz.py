"""Shared settings of the property-based fuzz tests (Hypothesis): a bounded run in the default suite, and a slow
profile with many more examples (``pytest -m slow``).  :func:`fuzz_tests` makes both tests from one property."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

#: examples per reader in the default suite / under ``-m slow``
DEFAULT_EXAMPLES, SLOW_EXAMPLES = 60, 1500

_common = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}


def fuzz_tests(strategy, check):
    """``(test, slow_test)``: ``check(example)`` for examples of ``strategy``, ``DEFAULT_EXAMPLES`` of them
    (derandomised: the same every run) and ``SLOW_EXAMPLES`` (random) under the ``slow`` marker."""

    @settings(max_examples=DEFAULT_EXAMPLES, derandomize=True, **_common)
    @given(strategy)
    def test(example):
        check(example)

    @pytest.mark.slow
    @settings(max_examples=SLOW_EXAMPLES, **_common)
    @given(strategy)
    def slow_test(example):
        check(example)

    return test, slow_test
