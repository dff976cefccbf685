"""Fuzzing the molecule readers (SDF, xyz, extxyz): every input either parses into finite molecules or fails with
:class:`~moldiff.molecules.io.MoleculeFileError`; no other exception escapes, and nothing is written."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

from moldiff.molecules.graph_mol import read_graph_sdf
from moldiff.molecules.io import MoleculeFileError, read_molecules

from ..fuzz import fuzz_tests, not_from_memory

METHANE_SDF = """methane
     RDKit          3D

  5  4  0  0  0  0  0  0  0  0999 V2000
    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
    0.6293    0.6293    0.6293 H   0  0  0  0  0  0  0  0  0  0  0  0
   -0.6293   -0.6293    0.6293 H   0  0  0  0  0  0  0  0  0  0  0  0
   -0.6293    0.6293   -0.6293 H   0  0  0  0  0  0  0  0  0  0  0  0
    0.6293   -0.6293   -0.6293 H   0  3  0  0  0  0  0  0  0  0  0  0
  1  2  1  0
  1  3  1  0
  1  4  1  0
  1  5  1  0
M  CHG  1   1   1
M  END
$$$$
"""
WATER_XYZ = """3
water Properties=species:S:1:pos:R:3 energy=-1.5
O 0.0 0.0 0.0
H 0.96 0.0 0.0
H -0.24 0.93 0.0
"""
TOKENS = ["0", "1", "-1", "999", "nan", "inf", "-inf", "1e308", "C", "H", "Xx", "$$$$", "M  END", "M  CHG",
          "V3000", "V2000", "", " ", "\t", "\n", "\x00", "é", "99999999999999999999", "3", "-0.5", "Properties=",
          "pos:R:3", "species:S:1", "\"", "=", "M  CHG  9", "  1  9  1  0"]


def _mutations(base: str):
    lines = base.splitlines(keepends=True)
    line = st.integers(0, len(lines) - 1)
    edit = st.one_of(
        st.tuples(st.just("cut"), st.integers(0, len(base))),
        st.tuples(st.just("drop"), line),
        st.tuples(st.just("dup"), line),
        st.tuples(st.just("replace"), line, st.sampled_from(TOKENS)),
        st.tuples(st.just("insert"), st.integers(0, len(base)), st.sampled_from(TOKENS)),
        st.tuples(st.just("token"), line, st.integers(0, 12), st.sampled_from(TOKENS)),
    )

    def apply(edits):
        ls = list(lines)
        for e in edits:
            text = "".join(ls)
            if e[0] == "cut":
                ls = text[: e[1]].splitlines(keepends=True)
            elif e[0] == "drop" and e[1] < len(ls):
                del ls[e[1]]
            elif e[0] == "dup" and e[1] < len(ls):
                ls.insert(e[1], ls[e[1]])
            elif e[0] == "replace" and e[1] < len(ls):
                ls[e[1]] = e[2] + "\n"
            elif e[0] == "insert":
                ls = (text[: e[1]] + e[2] + text[e[1]:]).splitlines(keepends=True)
            elif e[0] == "token" and e[1] < len(ls):
                words = ls[e[1]].split(" ")
                words[e[2] % len(words)] = e[3]
                ls[e[1]] = " ".join(words)
        return "".join(ls)

    return st.lists(edit, min_size=1, max_size=4).map(apply)


def _files(base: str):
    return st.one_of(_mutations(base), _mutations(base + base), st.text(max_size=300),
                     st.binary(max_size=300).map(lambda b: b.decode("latin-1")))


def _check(text: str, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"m{suffix}"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        readers = [read_molecules] + ([read_graph_sdf] if suffix == ".sdf" else [])
        for reader in readers:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    mols = reader(path)
            except MoleculeFileError as error:
                not_from_memory(error)
                continue
            for m in mols:
                pos = m[1] if isinstance(m, tuple) else m.positions
                assert np.isfinite(np.asarray(pos)).all()
        assert sorted(p.name for p in Path(tmp).iterdir()) == [path.name]  # nothing written


test_sdf_reader, test_sdf_reader_slow = fuzz_tests(_files(METHANE_SDF), lambda t: _check(t, ".sdf"))
test_xyz_reader, test_xyz_reader_slow = fuzz_tests(_files(WATER_XYZ), lambda t: _check(t, ".xyz"))
test_extxyz_reader, test_extxyz_reader_slow = fuzz_tests(_files(WATER_XYZ), lambda t: _check(t, ".extxyz"))
