"""Fuzzing the observations reader: every file either gives finite observations ``[B, P]`` and a positive length
(or none), or fails with :class:`~physics.fields.api.ObservationFileError`; nothing else escapes, nothing is
written."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from physics.fields.api import ObservationFileError, read_observations

from ...fuzz import fuzz_tests, not_from_memory

DTYPES = st.sampled_from(["f4", "f8", "i4", "i8", "u1", "b1", "c8", "U3", "S2", "f2", "M8[s]"])
ARRAYS = st.one_of(
    hnp.arrays(st.sampled_from(["f4", "f8", "i8"]), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
    DTYPES.flatmap(lambda d: hnp.arrays(d, hnp.array_shapes(min_dims=0, max_dims=2, max_side=3))),
)


def _npz(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _object_npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, y=np.array([{"a": 1}, None], dtype=object))
    return buf.getvalue()


def _corrupt(data: bytes, cuts: list[int]) -> bytes:
    b = bytearray(data)
    for c in cuts:
        if b:
            b[c % len(b)] ^= 0xFF
    return bytes(b)


FILES = st.one_of(
    st.dictionaries(st.sampled_from(["y", "length", "x", "y2"]), ARRAYS, max_size=3).map(_npz),
    st.tuples(st.dictionaries(st.sampled_from(["y", "length"]), ARRAYS, min_size=1, max_size=2).map(_npz),
              st.lists(st.integers(0, 10_000), min_size=1, max_size=4)).map(lambda t: _corrupt(*t)),
    st.tuples(st.dictionaries(st.sampled_from(["y", "length"]), ARRAYS, min_size=1, max_size=2).map(_npz),
              st.floats(0, 1)).map(lambda t: t[0][: int(len(t[0]) * t[1])]),
    st.just(_object_npz()),
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
)
LENGTHS = st.one_of(st.none(), st.integers(1, 50))


def _check(case) -> None:
    data, length = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "obs.npz"
        path.write_bytes(data)
        try:
            y, n = read_observations(path, length)
        except ObservationFileError as error:
            not_from_memory(error)
            pass
        else:
            assert y.ndim == 2 and y.shape[0] >= 1 and y.shape[1] >= 1 and bool(y.isfinite().all())
            assert n is None or (isinstance(n, int) and n >= 1)
        assert [p.name for p in Path(tmp).iterdir()] == ["obs.npz"]
        assert zipfile.is_zipfile(path) == zipfile.is_zipfile(io.BytesIO(data))  # the file is left as it was


test_observations_reader, test_observations_reader_slow = fuzz_tests(st.tuples(FILES, LENGTHS), _check)
