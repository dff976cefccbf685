"""QM9 from the PyPI package ``qm9pack`` (130,831 B3LYP molecules, positions in Å), never a download.

``import qm9pack`` fails on setuptools without ``pkg_resources``, so its CSV files are found through
``importlib.util.find_spec``.  The first use parses them once into a compact cache (``qm9.npz``: atomic
numbers, float32 positions, properties, GDB SMILES, and a SHA-256 checksum of the arrays); later loads
take about a second.  A corrupt, truncated or stale cache is reported and rebuilt, never trusted.

Splits are EDM's (Hoogeboom et al. 2022, after Cormorant): molecules sorted by their QM9 index, then
``numpy.random.seed(0); numpy.random.permutation(130831)`` cut into 100,000 train / 17,748 valid /
13,083 test.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import sys
import warnings
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..fileio import array_checksum, cache_dir, cached_strings, read_npz_cache, write_npz_cache
from ..progress import progress_bar

__all__ = [
    "QM9",
    "QM9CacheError",
    "PROPERTIES",
    "SPLIT_SIZES",
    "NUM_MOLECULES",
    "default_cache_dir",
    "qm9pack_data_dir",
    "edm_split_indices",
]

NUM_MOLECULES = 130_831
SPLIT_SIZES = {"train": 100_000, "valid": 17_748, "test": 13_083}
CACHE_VERSION = 1
SMILES_PIPELINE_VERSION = 1  #: bump when the evaluator's bond or SMILES rules change
_CSV_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
_SYMBOLS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}

#: kept for conditioning: (cache name, qm9pack column, unit)
PROPERTIES: tuple[tuple[str, str, str], ...] = (
    ("mu", "Dipole_debye", "D"),
    ("alpha", "Polarizability_bohr3", "bohr^3"),
    ("homo", "HOMO_au", "Ha"),
    ("lumo", "LUMO_au", "Ha"),
    ("gap", "HOMO_LUMO_gap_au", "Ha"),
    ("r2", "R2_bohr2", "bohr^2"),
    ("zpve", "ZPVE_au", "Ha"),
    ("u0", "InternalEnergy_0K_au", "Ha"),
    ("u298", "InternalEnergy_298K_au", "Ha"),
    ("h298", "Enthalphy_298K_au", "Ha"),
    ("g298", "GibbsFreeEnergy_298K_au", "Ha"),
    ("cv", "Heatcapacity_Cv_cal_mol_K", "cal/mol/K"),
    ("rot_a", "RotA_GHz", "GHz"),
    ("rot_b", "RotB_GHz", "GHz"),
    ("rot_c", "RotC_GHz", "GHz"),
)
_ARRAYS = ("index", "num_atoms", "offsets", "atomic_numbers", "positions", "properties", "smiles")


class QM9CacheError(DataError):
    """The QM9 source is missing or a cache cannot be built."""


def default_cache_dir() -> Path:
    """``$MOLDIFF_CACHE/qm9`` or ``~/.cache/moldiff/qm9``."""
    return cache_dir("qm9")


def qm9pack_data_dir() -> Path:
    """The folder of ``qm9pack``'s CSV files (without importing the package)."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise QM9CacheError("QM9 needs the PyPI package qm9pack: pip install qm9pack")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    missing = [f for f in _CSV_FILES if not (data / f).is_file()]
    if missing:
        raise QM9CacheError(f"qm9pack at {data.parent} lacks {', '.join(missing)}; reinstall qm9pack")
    return data


def edm_split_indices(num_molecules: int = NUM_MOLECULES) -> dict[str, np.ndarray]:
    """EDM's split: positions into the index-sorted molecule list (train, valid, test)."""
    n_train = SPLIT_SIZES["train"]
    n_test = int(0.1 * num_molecules)
    n_valid = num_molecules - n_train - n_test
    perm = np.random.RandomState(0).permutation(num_molecules)  # == np.random.seed(0); permutation
    train, valid, test = np.split(perm, [n_train, n_train + n_valid])
    return {"train": train, "valid": valid, "test": test}


def _parse_floats(text: str) -> np.ndarray:
    return np.array(text.replace("[", "").replace("]", "").split(","), dtype=np.float64)


def _read_csvs(data_dir: Path, progress: bool) -> dict[str, np.ndarray]:
    csv.field_size_limit(sys.maxsize)
    index, natoms, zs, pos, props, smiles = [], [], [], [], [], []
    bar = progress_bar(total=NUM_MOLECULES, enabled=progress, desc="QM9: parsing qm9pack CSV (once)")
    for name in _CSV_FILES:
        with open(data_dir / name, newline="") as f:
            for row in csv.DictReader(f):
                try:
                    elements = [_SYMBOLS[s.strip().strip("'\"")] for s in row["Elements"].strip("[]").split(",")]
                    xyz = _parse_floats(row["XYZ_Ang"]).reshape(-1, 3)
                    n = int(row["N_atoms"])
                    if len(elements) != n or len(xyz) != n:
                        raise ValueError(f"{n} atoms declared, {len(elements)} elements, {len(xyz)} positions")
                    if not np.isfinite(xyz).all():
                        raise ValueError("non-finite coordinates")
                    vals = [float(row[col]) for _, col, _ in PROPERTIES]
                except (KeyError, ValueError) as e:
                    raise QM9CacheError(f"{data_dir / name}: molecule {row.get('Index')}: cannot parse: {e}") from e
                index.append(int(row["Index"]))
                natoms.append(n)
                zs.append(elements)
                pos.append(xyz)
                props.append(vals)
                smiles.append(row["SMILES"])
                bar.update(1)
    bar.close()
    order = np.argsort(np.asarray(index), kind="stable")
    natoms_arr = np.asarray(natoms, dtype=np.int64)[order]
    return {
        "index": np.asarray(index, dtype=np.int64)[order],
        "num_atoms": natoms_arr,
        "offsets": np.concatenate([[0], np.cumsum(natoms_arr)]).astype(np.int64),
        "atomic_numbers": np.concatenate([np.asarray(zs[i], dtype=np.uint8) for i in order]),
        "positions": np.concatenate([pos[i] for i in order]).astype(np.float32),
        "properties": np.asarray(props, dtype=np.float64)[order],
        "smiles": np.asarray([smiles[i] for i in order], dtype=np.str_),
    }


def _validate(arrays: dict[str, np.ndarray]) -> None:
    n = len(arrays["index"])
    if n != NUM_MOLECULES:
        raise QM9CacheError(f"expected {NUM_MOLECULES} molecules, found {n}")
    if len(np.unique(arrays["index"])) != n:
        raise QM9CacheError("duplicate QM9 indices")
    if arrays["offsets"][-1] != len(arrays["atomic_numbers"]) or len(arrays["positions"]) != len(arrays["atomic_numbers"]):
        raise QM9CacheError("atom counts do not add up")


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_npz_cache(path, arrays, {"version": CACHE_VERSION, "properties": [list(p) for p in PROPERTIES]}, keys=_ARRAYS)


def _read_cache(path: Path) -> tuple[dict[str, np.ndarray], str]:
    """Load and verify a cache; raises ``ValueError``/``OSError``/``KeyError`` on anything wrong."""
    arrays, meta = read_npz_cache(path, _ARRAYS)
    if meta.get("version") != CACHE_VERSION:
        raise ValueError(f"cache version {meta.get('version')}, expected {CACHE_VERSION}")
    _validate(arrays)
    return arrays, meta["checksum"]


@dataclass(frozen=True)
class Molecule:
    """One molecule: ``atomic_numbers [n]`` (uint8) and ``positions [n, 3]`` (Å, float32)."""

    atomic_numbers: np.ndarray
    positions: np.ndarray


class QM9:
    """QM9 in memory.  ``QM9.load()`` builds or reads the cache; ``qm9.split("train")`` gives the EDM
    split's molecule positions (rows of this object), ``qm9.molecule(i)`` one molecule."""

    def __init__(self, arrays: dict[str, np.ndarray], path: Path | None = None, checksum: str | None = None):
        self.arrays = arrays
        self.path = path
        self.checksum = checksum or array_checksum(arrays, _ARRAYS)
        self.index = arrays["index"]  #: QM9 molecule numbers (1-based, as in dsgdb9nsd_NNNNNN)
        self.num_atoms = arrays["num_atoms"]
        self.offsets = arrays["offsets"]
        self.atomic_numbers = arrays["atomic_numbers"]
        self.positions = arrays["positions"]
        self.properties = arrays["properties"]  #: ``[M, len(PROPERTIES)]``, units in PROPERTIES
        self.smiles = arrays["smiles"]  #: the GDB SMILES shipped with QM9 (not our pipeline's)

    @classmethod
    def load(cls, cache_dir: str | Path | None = None, *, progress: bool = True) -> "QM9":
        path = Path(cache_dir or default_cache_dir()) / "qm9.npz"
        if path.exists():
            try:
                arrays, checksum = _read_cache(path)
                return cls(arrays, path, checksum)
            except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as e:
                warnings.warn(f"QM9 cache {path} is unusable ({e}); rebuilding it from qm9pack", stacklevel=2)
        arrays = _read_csvs(qm9pack_data_dir(), progress)
        _validate(arrays)
        _write_cache(path, arrays)
        return cls(arrays, path)

    def pipeline_smiles(self, split: str = "train", *, progress: bool = True) -> set[str]:
        """Canonical SMILES of a split's valid molecules, built from the coordinates by the evaluator's
        pipeline (bonds from distances, RDKit sanitize, largest fragment) -- the reference for novelty.
        Cached beside the data (``smiles_<split>.txt``), keyed by the data checksum."""
        from .evaluate import molecule_smiles  # lazy: RDKit loads only when molecules are read or scored

        header = f"# moldiff QM9 {split} pipeline SMILES v{SMILES_PIPELINE_VERSION} data={self.checksum}"
        path = None if self.path is None else self.path.parent / f"smiles_{split}.txt"

        def build() -> set[str]:
            mols = self.molecules(self.split(split))
            return {s for z, p in progress_bar(mols, enabled=progress, desc=f"QM9 {split} SMILES (once)")
                    if (s := molecule_smiles(z, p)) is not None}

        return cached_strings(path, header, build)

    def __len__(self) -> int:
        return len(self.index)

    @cached_property
    def splits(self) -> dict[str, np.ndarray]:
        return edm_split_indices(len(self))

    def split(self, name: str) -> np.ndarray:
        """Row numbers of a split: ``train``, ``valid`` or ``test``."""
        if name not in self.splits:
            raise ValueError(f"unknown QM9 split {name!r}; choose one of {sorted(self.splits)}")
        return self.splits[name]

    def molecule(self, i: int) -> Molecule:
        a, b = self.offsets[i], self.offsets[i + 1]
        return Molecule(self.atomic_numbers[a:b], self.positions[a:b])

    def molecules(self, rows) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(atomic_numbers, positions), ...]`` for the given rows (the evaluator's input)."""
        return [(self.atomic_numbers[self.offsets[i]:self.offsets[i + 1]],
                 self.positions[self.offsets[i]:self.offsets[i + 1]]) for i in rows]

    def property(self, name: str) -> np.ndarray:
        names = [p[0] for p in PROPERTIES]
        if name not in names:
            raise ValueError(f"unknown QM9 property {name!r}; choose one of {names}")
        return self.properties[:, names.index(name)]

    def size_histogram(self, split: str = "train") -> dict[int, int]:
        """Atom-count histogram ``{n_atoms: count}`` of a split (sizes for sampling)."""
        sizes, counts = np.unique(self.num_atoms[self.split(split)], return_counts=True)
        return {int(s): int(c) for s, c in zip(sizes, counts)}

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Concatenate molecules ``rows``: ``(atomic_numbers [N], positions [N, 3], graph [N])``."""
        rows = np.asarray(rows, dtype=np.int64)
        counts = self.num_atoms[rows]
        starts = self.offsets[rows]
        graph = np.repeat(np.arange(len(rows)), counts)
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        atoms = np.repeat(starts, counts) + within
        return self.atomic_numbers[atoms], self.positions[atoms], graph

    def to_pyg(self, i: int, graphs=None):
        """Molecule ``i`` as a ``torch_geometric.data.Data`` (``z``, ``pos``, ``y`` properties, ``idx``).  With a
        :class:`~moldiff.molecules.graphs.QM9Graphs` table it also has the bonds -- ``edge_index [2, 2b]``
        (both directions) and ``edge_attr [2b]`` (bond order 1, 2, 3; kekulized) -- and ``charges [n]``
        (formal charges)."""
        import torch
        from torch_geometric.data import Data

        m = self.molecule(i)
        data = Data(z=torch.from_numpy(m.atomic_numbers.astype(np.int64)), pos=torch.from_numpy(m.positions.copy()),
                    y=torch.from_numpy(self.properties[i : i + 1].astype(np.float32)), idx=int(self.index[i]))
        if graphs is not None:
            g = graphs.graph(i)
            b = torch.from_numpy(g.bonds)
            data.edge_index = torch.cat([b[:, :2].T, b[:, :2].T.flip(0)], dim=1)
            data.edge_attr = torch.cat([b[:, 2], b[:, 2]])
            data.charges = torch.from_numpy(g.charges)
        return data
