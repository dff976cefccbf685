"""Bond orders and atom stability by EDM's distance rule (Hoogeboom et al. 2022).

The facts are those of EDM's reference code, ``qm9/bond_analyze.py`` and ``qm9/analyze.py`` of
github.com/ehoogeboom/e3_diffusion_for_molecules: typical bond lengths in pm for single / double /
triple bonds (``bonds1`` / ``bonds2`` / ``bonds3``), margins of 10 / 5 / 3 pm, and the allowed
valences.  For two atoms at distance ``d`` (Å, turned into pm by ``100 * d``), EDM's
``get_bond_order`` gives

* no bond when ``100 d >= bonds1 + 10`` (or the pair has no single-bond entry),
* else a double bond when the pair has a double entry and ``100 d < bonds2 + 5``, and then a triple bond
  when the pair has a triple entry and ``100 d < bonds3 + 3``,
* else a single bond.

An atom is *stable* when the sum of its bond orders is exactly one of its allowed valences (EDM's
``check_stability``); a molecule is stable when all its atoms are.

Here the rule is vectorised over all atom pairs with ``[119, 119]`` lookup tables of thresholds indexed by
atomic number, so scoring 100,000 QM9 molecules costs no Python loop over pairs.

Elements: every element of EDM's tables can be scored (H, B, C, N, O, F, Al, Si, P, S, Cl, As, Br, I, Hg,
Bi; Al, Hg and Bi have a valence but no bond lengths, so they bond to nothing, as with EDM's
``check_exists=True``).  A pair of known elements without a ``bonds1`` entry never bonds.  Any other
atomic number is an *unknown element*: it bonds to nothing and is never stable -- never an error.

One deliberate choice: EDM's ``bonds2`` lists C=S (160 pm) under C but not under S, so EDM's own
``get_bond_order('S', 'C', d)`` cannot return a double bond while ``get_bond_order('C', 'S', d)`` can.
EDM's RDKit path (``build_xae_molecule``) sorts each pair by atom type first, which puts C before S; the
tables here do the same for every pair (lookup by the lower atomic number first), so bond orders are
symmetric.  All other entries of EDM's tables are symmetric, so for QM9 (H, C, N, O, F) this is exactly
EDM.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "BONDS1",
    "BONDS2",
    "BONDS3",
    "MARGINS",
    "ALLOWED_BONDS",
    "QM9_ATOMIC_NUMBERS",
    "ELEMENT_SYMBOLS",
    "MAX_ATOMIC_NUMBER",
    "element_symbol",
    "is_known_element",
    "pairwise_distances",
    "bond_orders",
    "bond_orders_from_distances",
    "atom_stability",
    "stability_from_orders",
    "molecule_stable",
]

# --------------------------------------------------------------------------------------------------
# EDM's tables (qm9/bond_analyze.py), lengths in pm.  Copied value for value; EDM cites
# wiredchemist.com bond_energies_lengths and chemistry-reference.com "Bond Lengths and Enthalpies".
# --------------------------------------------------------------------------------------------------

#: Single-bond lengths (pm).
BONDS1: dict[str, dict[str, int]] = {
    "H": {"H": 74, "C": 109, "N": 101, "O": 96, "F": 92, "B": 119, "Si": 148, "P": 144, "As": 152,
          "S": 134, "Cl": 127, "Br": 141, "I": 161},
    "C": {"H": 109, "C": 154, "N": 147, "O": 143, "F": 135, "Si": 185, "P": 184, "S": 182, "Cl": 177,
          "Br": 194, "I": 214},
    "N": {"H": 101, "C": 147, "N": 145, "O": 140, "F": 136, "Cl": 175, "Br": 214, "S": 168, "I": 222,
          "P": 177},
    "O": {"H": 96, "C": 143, "N": 140, "O": 148, "F": 142, "Br": 172, "S": 151, "P": 163, "Si": 163,
          "Cl": 164, "I": 194},
    "F": {"H": 92, "C": 135, "N": 136, "O": 142, "F": 142, "S": 158, "Si": 160, "Cl": 166, "Br": 178,
          "P": 156, "I": 187},
    "B": {"H": 119, "Cl": 175},
    "Si": {"Si": 233, "H": 148, "C": 185, "O": 163, "S": 200, "F": 160, "Cl": 202, "Br": 215, "I": 243},
    "Cl": {"Cl": 199, "H": 127, "C": 177, "N": 175, "O": 164, "P": 203, "S": 207, "B": 175, "Si": 202,
           "F": 166, "Br": 214},
    "S": {"H": 134, "C": 182, "N": 168, "O": 151, "S": 204, "F": 158, "Cl": 207, "Br": 225, "Si": 200,
          "P": 210, "I": 234},
    "Br": {"Br": 228, "H": 141, "C": 194, "O": 172, "N": 214, "Si": 215, "S": 225, "F": 178, "Cl": 214,
           "P": 222},
    "P": {"P": 221, "H": 144, "C": 184, "O": 163, "Cl": 203, "S": 210, "F": 156, "N": 177, "Br": 222},
    "I": {"H": 161, "C": 214, "Si": 243, "N": 222, "O": 194, "S": 234, "F": 187, "I": 266},
    "As": {"H": 152},
}

#: Double-bond lengths (pm).  Note the one-sided C -> S entry (see the module docstring).
BONDS2: dict[str, dict[str, int]] = {
    "C": {"C": 134, "N": 129, "O": 120, "S": 160},
    "N": {"C": 129, "N": 125, "O": 121},
    "O": {"C": 120, "N": 121, "O": 121, "P": 150},
    "P": {"O": 150, "S": 186},
    "S": {"P": 186},
}

#: Triple-bond lengths (pm).
BONDS3: dict[str, dict[str, int]] = {
    "C": {"C": 120, "N": 116, "O": 113},
    "N": {"C": 116, "N": 110},
    "O": {"C": 113},
}

#: ``margin1, margin2, margin3`` (pm) added to the single / double / triple lengths.
MARGINS: tuple[int, int, int] = (10, 5, 3)

#: Allowed valences (sum of bond orders) per element; an int or a list of ints.
ALLOWED_BONDS: dict[str, int | list[int]] = {
    "H": 1, "C": 4, "N": 3, "O": 2, "F": 1, "B": 3, "Al": 3, "Si": 4, "P": [3, 5], "S": 4, "Cl": 1,
    "As": 3, "Br": 1, "I": 1, "Hg": [1, 2], "Bi": [3, 5],
}

# --------------------------------------------------------------------------------------------------

#: Atomic numbers of the elements EDM knows (symbol -> Z).
_Z: dict[str, int] = {
    "H": 1, "B": 5, "C": 6, "N": 7, "O": 8, "F": 9, "Al": 13, "Si": 14, "P": 15, "S": 16, "Cl": 17,
    "As": 33, "Br": 35, "I": 53, "Hg": 80, "Bi": 83,
}
#: H, C, N, O, F.
QM9_ATOMIC_NUMBERS: tuple[int, ...] = (1, 6, 7, 8, 9)
#: Z -> symbol for the known elements.
ELEMENT_SYMBOLS: dict[int, str] = {z: s for s, z in _Z.items()}
#: Lookup tables cover ``0 <= Z <= MAX_ATOMIC_NUMBER``; index 0 (no element) doubles as the row used for
#: any out-of-range atomic number.
MAX_ATOMIC_NUMBER = 118
_SIZE = MAX_ATOMIC_NUMBER + 1
_MAX_VALENCES = max(len(v) if isinstance(v, list) else 1 for v in ALLOWED_BONDS.values())


def _threshold_table(lengths: dict[str, dict[str, int]], margin: int) -> np.ndarray:
    """``[119, 119]`` float64 thresholds ``length + margin`` in pm, ``-inf`` where the pair has no entry.
    Entry ``(a, b)`` is looked up as ``lengths[lo][hi]`` with ``lo`` the element of lower atomic number."""
    table = np.full((_SIZE, _SIZE), -np.inf)
    for a, za in _Z.items():
        for b, zb in _Z.items():
            lo, hi = (a, b) if za <= zb else (b, a)
            if lo in lengths and hi in lengths[lo]:
                table[za, zb] = lengths[lo][hi] + margin
    return table


_T1 = _threshold_table(BONDS1, MARGINS[0])
_T2 = _threshold_table(BONDS2, MARGINS[1])
_T3 = _threshold_table(BONDS3, MARGINS[2])

#: ``[119, _MAX_VALENCES]`` allowed valences, padded with -1 (never equal to a bond-order sum).
VALENCE_TABLE = np.full((_SIZE, _MAX_VALENCES), -1, dtype=np.int64)
KNOWN_ELEMENTS = np.zeros(_SIZE, dtype=bool)
for _sym, _val in ALLOWED_BONDS.items():
    _vals = _val if isinstance(_val, list) else [_val]
    VALENCE_TABLE[_Z[_sym], : len(_vals)] = _vals
    KNOWN_ELEMENTS[_Z[_sym]] = True
del _sym, _val, _vals


def element_symbol(z: int) -> str:
    """Symbol of a known element, else ``"Z<z>"`` (e.g. ``"Z54"``)."""
    return ELEMENT_SYMBOLS.get(int(z), f"Z{int(z)}")


def as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def table_index(atomic_numbers: Any) -> np.ndarray:
    """Atomic numbers as int64 ``[n]`` indices into the lookup tables (out of range -> 0, no element)."""
    z = as_numpy(atomic_numbers)
    if z.ndim != 1:
        raise ValueError(f"atomic_numbers must have shape [n], got {z.shape}")
    if z.dtype.kind == "f":
        if not np.all(np.isfinite(z) & (z == np.round(z))):
            raise ValueError("atomic_numbers must be integers")
    elif z.dtype.kind not in "iub":
        raise ValueError(f"atomic_numbers must be integers, got dtype {z.dtype}")
    z = z.astype(np.int64)
    return np.where((z >= 0) & (z <= MAX_ATOMIC_NUMBER), z, 0)


def is_known_element(atomic_numbers: Any) -> np.ndarray:
    """``[n]`` bool: the element has an allowed valence in EDM's table (so it can ever be stable)."""
    return KNOWN_ELEMENTS[table_index(atomic_numbers)]


def _positions(positions: Any, n: int) -> np.ndarray:
    pos = np.asarray(as_numpy(positions), dtype=np.float64)
    if pos.shape != (n, 3):
        raise ValueError(f"positions must have shape [{n}, 3], got {pos.shape}")
    return pos


def pairwise_distances(positions: Any) -> np.ndarray:
    """``[n, n]`` float64 Euclidean distances (Å) of ``positions [n, 3]`` (Å).  Non-finite positions give
    NaN/inf distances (no warning), which never count as bonds."""
    pos = np.asarray(as_numpy(positions), dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"positions must have shape [n, 3], got {pos.shape}")
    with np.errstate(invalid="ignore", over="ignore"):
        diff = pos[:, None, :] - pos[None, :, :]
        return np.sqrt((diff * diff).sum(-1))


def bond_orders_from_distances(atomic_numbers: Any, distances: np.ndarray) -> np.ndarray:
    """EDM's bond orders ``[n, n]`` int64 (0 none, 1 single, 2 double, 3 triple; diagonal 0) from
    ``atomic_numbers [n]`` and a distance matrix ``[n, n]`` in Å."""
    z = table_index(atomic_numbers)
    d = np.asarray(distances, dtype=np.float64)
    if d.shape != (len(z), len(z)):
        raise ValueError(f"distances must have shape [{len(z)}, {len(z)}], got {d.shape}")
    return orders_from_table(z, d)


def orders_from_table(z: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """:func:`bond_orders_from_distances` on table indices ``z`` (from :func:`table_index`)."""
    d = 100.0 * distances  # Å -> pm, as EDM
    zi, zj = z[:, None], z[None, :]
    with np.errstate(invalid="ignore"):
        single = d < _T1[zi, zj]
        double = d < _T2[zi, zj]
        triple = d < _T3[zi, zj]
    # EDM's nesting: a triple needs the double test to pass too, and both need the single test.
    orders = single * (1 + double * (1 + triple.astype(np.int64)))
    np.fill_diagonal(orders, 0)
    return orders.astype(np.int64, copy=False)


def bond_orders(atomic_numbers: Any, positions: Any) -> np.ndarray:
    """EDM's ``get_bond_order`` for every pair: ``atomic_numbers [n]`` int, ``positions [n, 3]`` in Å ->
    ``[n, n]`` int64 symmetric bond-order matrix (0-3), diagonal 0.  Unknown elements and non-finite
    positions bond to nothing."""
    z = table_index(atomic_numbers)
    return orders_from_table(z, pairwise_distances(_positions(positions, len(z))))


def stability_from_orders(atomic_numbers: Any, orders: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(stable [n] bool, bond_order_sum [n] int64)`` from a bond-order matrix ``[n, n]``: an atom is
    stable iff its bond-order sum is one of its element's allowed valences (unknown elements: never)."""
    return _stability(table_index(atomic_numbers), np.asarray(orders, dtype=np.int64))


def _stability(z: np.ndarray, orders: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`stability_from_orders` on table indices ``z`` (from :func:`table_index`)."""
    sums = orders.sum(axis=1)
    stable = (sums[:, None] == VALENCE_TABLE[z]).any(axis=1)
    return stable, sums


def atom_stability(atomic_numbers: Any, positions: Any) -> tuple[np.ndarray, np.ndarray]:
    """EDM's ``check_stability`` per atom: ``atomic_numbers [n]``, ``positions [n, 3]`` (Å) ->
    ``(stable_atoms [n] bool, bond_order_sum [n] int64)``."""
    z = table_index(atomic_numbers)
    return _stability(z, bond_orders(z, positions))


def molecule_stable(atomic_numbers: Any, positions: Any) -> bool:
    """True iff every atom is stable (EDM's molecule stability).  An empty molecule is not stable here
    (EDM's ``check_stability`` would call it stable; generators never produce one)."""
    stable, _ = atom_stability(atomic_numbers, positions)
    return bool(len(stable) > 0 and stable.all())
