"""EDM's bond rule and stability on hand-built molecules (geometries from bond lengths and angles, Å).

The builders below are shared with ``test_evaluate.py`` and ``test_io.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moldiff.molecules.bonds import (
    ALLOWED_BONDS,
    BONDS1,
    BONDS2,
    BONDS3,
    MARGINS,
    atom_stability,
    bond_orders,
    bond_orders_from_distances,
    is_known_element,
    molecule_stable,
    pairwise_distances,
    stability_from_orders,
)

# ----------------------------------------------------------------------------------------- builders

TETRAHEDRON = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=np.float64) / np.sqrt(3)


def water() -> tuple[np.ndarray, np.ndarray]:
    """H2O: O-H 0.96 Å, H-O-H 104.5 deg (H...H 1.52 Å: no bond)."""
    a = np.deg2rad(104.5)
    pos = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [0.96 * np.cos(a), 0.96 * np.sin(a), 0.0]])
    return np.array([8, 1, 1]), pos


def methane() -> tuple[np.ndarray, np.ndarray]:
    """CH4: C-H 1.09 Å, tetrahedral (H...H 1.78 Å)."""
    return np.array([6, 1, 1, 1, 1]), np.vstack([np.zeros(3), 1.09 * TETRAHEDRON])


def ammonium() -> tuple[np.ndarray, np.ndarray]:
    """NH4 (no charge is given to the evaluator): N-H 1.03 Å, tetrahedral."""
    return np.array([7, 1, 1, 1, 1]), np.vstack([np.zeros(3), 1.03 * TETRAHEDRON])


def ethylene() -> tuple[np.ndarray, np.ndarray]:
    """C2H4: C=C 1.33 Å, C-H 1.087 Å, H-C-H 117 deg, planar."""
    h = np.deg2rad(117.0 / 2)
    cc, ch = 1.33, 1.087
    pos = [[-cc / 2, 0, 0], [cc / 2, 0, 0]]
    for sx in (-1, 1):
        for sy in (-1, 1):
            pos.append([sx * (cc / 2 + ch * np.cos(h)), sy * ch * np.sin(h), 0.0])
    return np.array([6, 6, 1, 1, 1, 1]), np.array(pos)


def acetylene() -> tuple[np.ndarray, np.ndarray]:
    """C2H2: C#C 1.20 Å, C-H 1.06 Å, linear."""
    pos = np.array([[-0.60, 0, 0], [0.60, 0, 0], [-1.66, 0, 0], [1.66, 0, 0]])
    return np.array([6, 6, 1, 1]), pos


def carbon_monoxide() -> tuple[np.ndarray, np.ndarray]:
    """CO: C-O 1.13 Å."""
    return np.array([6, 8]), np.array([[0.0, 0.0, 0.0], [1.13, 0.0, 0.0]])


def pair(z1: int, z2: int, d: float) -> tuple[np.ndarray, np.ndarray]:
    return np.array([z1, z2]), np.array([[0.0, 0.0, 0.0], [d, 0.0, 0.0]])


# ----------------------------------------------------------------------------------------- tables


def test_tables_are_edms():
    # qm9/bond_analyze.py of ehoogeboom/e3_diffusion_for_molecules
    assert MARGINS == (10, 5, 3)
    assert {k: ALLOWED_BONDS[k] for k in "HCNOF"} == {"H": 1, "C": 4, "N": 3, "O": 2, "F": 1}
    assert ALLOWED_BONDS["P"] == [3, 5] and ALLOWED_BONDS["S"] == 4 and ALLOWED_BONDS["Cl"] == 1
    qm9_single = {
        ("H", "H"): 74, ("H", "C"): 109, ("H", "N"): 101, ("H", "O"): 96, ("H", "F"): 92,
        ("C", "C"): 154, ("C", "N"): 147, ("C", "O"): 143, ("C", "F"): 135,
        ("N", "N"): 145, ("N", "O"): 140, ("N", "F"): 136, ("O", "O"): 148, ("O", "F"): 142, ("F", "F"): 142,
    }
    for (a, b), v in qm9_single.items():
        assert BONDS1[a][b] == BONDS1[b][a] == v
    assert BONDS2["C"] == {"C": 134, "N": 129, "O": 120, "S": 160}
    assert BONDS2["N"] == {"C": 129, "N": 125, "O": 121}
    assert BONDS2["O"] == {"C": 120, "N": 121, "O": 121, "P": 150}
    assert BONDS3 == {"C": {"C": 120, "N": 116, "O": 113}, "N": {"C": 116, "N": 110}, "O": {"C": 113}}


def _edm_get_bond_order(a: str, b: str, distance: float) -> int:
    """EDM's scalar rule, written out from the tables (pair looked up in the given order)."""
    d = 100 * distance
    if b not in BONDS1.get(a, {}):
        return 0
    if d < BONDS1[a][b] + MARGINS[0]:
        if b in BONDS2.get(a, {}) and d < BONDS2[a][b] + MARGINS[1]:
            if b in BONDS3.get(a, {}) and d < BONDS3[a][b] + MARGINS[2]:
                return 3
            return 2
        return 1
    return 0


def test_vectorised_rule_equals_scalar_rule_on_random_clouds():
    symbols = {1: "H", 5: "B", 6: "C", 7: "N", 8: "O", 9: "F", 14: "Si", 15: "P", 16: "S", 17: "Cl", 35: "Br", 53: "I"}
    zs = np.array(sorted(symbols))
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(2, 25))
        z = rng.choice(zs, size=n)
        pos = rng.uniform(0, 4.0, size=(n, 3))
        got = bond_orders(z, pos)
        d = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1))
        for i in range(n):
            for j in range(n):
                lo, hi = sorted((int(z[i]), int(z[j])))  # EDM's build_xae_molecule sorts the pair
                want = 0 if i == j else _edm_get_bond_order(symbols[lo], symbols[hi], d[i, j])
                assert got[i, j] == want, (i, j, z[i], z[j], d[i, j])


@pytest.mark.parametrize(
    "z1, z2, d, order",
    [
        (6, 6, 1.635, 1),  # < 154 + 10
        (6, 6, 1.645, 0),
        (6, 6, 1.385, 2),  # < 134 + 5
        (6, 6, 1.395, 1),
        (6, 6, 1.225, 3),  # < 120 + 3
        (6, 6, 1.235, 2),
        (1, 6, 1.185, 1),  # < 109 + 10
        (1, 6, 1.195, 0),
        (7, 7, 1.125, 3),  # < 110 + 3
        (8, 8, 1.255, 2),  # O=O < 121 + 5
        (1, 1, 0.835, 1),  # < 74 + 10
        (9, 9, 1.515, 1),
        (6, 9, 1.10, 1),  # no C=F entry: single however short
    ],
)
def test_thresholds(z1, z2, d, order):
    assert bond_orders(*pair(z1, z2, d))[0, 1] == order
    assert bond_orders(*pair(z2, z1, d))[0, 1] == order


def test_carbon_sulfur_double_bond_is_symmetric():
    # EDM lists C=S (160 pm) under C only; the pair is looked up with C first in either order.
    assert bond_orders(*pair(6, 16, 1.62))[0, 1] == 2
    assert bond_orders(*pair(16, 6, 1.62))[0, 1] == 2


# ----------------------------------------------------------------------------------------- molecules


def test_water():
    z, pos = water()
    np.testing.assert_array_equal(bond_orders(z, pos), [[0, 1, 1], [1, 0, 0], [1, 0, 0]])
    stable, sums = atom_stability(z, pos)
    assert stable.tolist() == [True, True, True] and sums.tolist() == [2, 1, 1]
    assert molecule_stable(z, pos)


def test_methane():
    z, pos = methane()
    orders = bond_orders(z, pos)
    want = np.zeros((5, 5), dtype=int)
    want[0, 1:] = want[1:, 0] = 1
    np.testing.assert_array_equal(orders, want)
    stable, sums = atom_stability(z, pos)
    assert stable.all() and sums.tolist() == [4, 1, 1, 1, 1]


def test_ethylene():
    z, pos = ethylene()
    want = np.zeros((6, 6), dtype=int)
    want[0, 1] = want[1, 0] = 2
    for c, hs in ((0, (2, 3)), (1, (4, 5))):
        for h in hs:
            want[c, h] = want[h, c] = 1
    np.testing.assert_array_equal(bond_orders(z, pos), want)
    stable, sums = atom_stability(z, pos)
    assert stable.all() and sums.tolist() == [4, 4, 1, 1, 1, 1]


def test_acetylene():
    z, pos = acetylene()
    np.testing.assert_array_equal(
        bond_orders(z, pos), [[0, 3, 1, 0], [3, 0, 0, 1], [1, 0, 0, 0], [0, 1, 0, 0]]
    )
    assert molecule_stable(z, pos)


def test_carbon_monoxide_is_unstable_under_the_rule():
    # 113 pm is below the triple threshold (113 + 3), so EDM's rule gives C#O.  The rule only checks the
    # valence sum: C has 3 (allowed 4) and O has 3 (allowed 2) -- both atoms unstable (no charges).
    z, pos = carbon_monoxide()
    np.testing.assert_array_equal(bond_orders(z, pos), [[0, 3], [3, 0]])
    stable, sums = atom_stability(z, pos)
    assert stable.tolist() == [False, False] and sums.tolist() == [3, 3]


def test_ammonium_nitrogen_is_unstable():
    # N-H 1.03 Å < 101 + 10 pm: four single bonds, N sums to 4 != 3; each H has exactly one bond.
    z, pos = ammonium()
    stable, sums = atom_stability(z, pos)
    assert stable.tolist() == [False, True, True, True, True] and sums.tolist() == [4, 1, 1, 1, 1]
    assert not molecule_stable(z, pos)


def test_random_cloud_does_not_crash():
    rng = np.random.default_rng(1)
    z = rng.choice([1, 6, 7, 8, 9], size=10)
    pos = rng.uniform(0, 10, size=(10, 3))
    orders = bond_orders(z, pos)
    assert orders.shape == (10, 10) and (orders == orders.T).all() and (np.diag(orders) == 0).all()
    assert set(np.unique(orders)) <= {0, 1, 2, 3}
    stable, sums = atom_stability(z, pos)
    np.testing.assert_array_equal(sums, orders.sum(1))


def test_single_and_empty_molecules():
    stable, sums = atom_stability(np.array([6]), np.zeros((1, 3)))
    assert stable.tolist() == [False] and sums.tolist() == [0]
    assert bond_orders(np.zeros(0, dtype=int), np.zeros((0, 3))).shape == (0, 0)
    stable, sums = atom_stability(np.zeros(0, dtype=int), np.zeros((0, 3)))
    assert stable.shape == (0,) and not molecule_stable(np.zeros(0, dtype=int), np.zeros((0, 3)))


def test_overlapping_atoms_are_scored_by_the_rule():
    # distance 0 is below every threshold: C-C becomes a triple bond (C sums to 3, unstable) ...
    np.testing.assert_array_equal(bond_orders(np.array([6, 6]), np.zeros((2, 3))), [[0, 3], [3, 0]])
    # ... while H-H becomes a single bond and both H are "stable".
    assert atom_stability(np.array([1, 1]), np.zeros((2, 3)))[0].all()


def test_unknown_elements_bond_to_nothing_and_are_unstable():
    z, pos = water()
    z = np.append(z, 54)  # xenon 1 Å from the oxygen
    pos = np.vstack([pos, [0.0, 0.0, 1.0]])
    orders = bond_orders(z, pos)
    assert (orders[3] == 0).all() and (orders[:, 3] == 0).all()
    stable, _ = atom_stability(z, pos)
    assert stable.tolist() == [True, True, True, False]
    for weird in (0, 119, 200, -3):
        stable, sums = atom_stability(np.array([6, weird]), np.array([[0, 0, 0], [1.0, 0, 0]]))
        assert sums.tolist() == [0, 0] and stable.tolist() == [False, False]
    assert is_known_element(np.array([1, 6, 7, 8, 9, 13, 80, 54, 0, 500])).tolist() == [True] * 7 + [False] * 3
    # Al has a valence but no bond lengths: it bonds to nothing (EDM's check_exists=True behaviour).
    assert (bond_orders(np.array([13, 1]), np.array([[0, 0, 0], [1.0, 0, 0]])) == 0).all()


def test_non_finite_positions_do_not_crash():
    z, pos = water()
    pos = pos.copy()
    pos[1, 0] = np.nan
    pos[2, 2] = np.inf
    with np.errstate(all="raise"):
        orders = bond_orders(z, pos)
    assert (orders == 0).all()
    assert not atom_stability(z, pos)[0].any()


def test_torch_and_float_inputs():
    z, pos = methane()
    a = bond_orders(torch.tensor(z), torch.tensor(pos, dtype=torch.float32, requires_grad=True))
    np.testing.assert_array_equal(a, bond_orders(z, pos))
    np.testing.assert_array_equal(bond_orders(z.astype(np.float32), pos), bond_orders(z, pos))
    with pytest.raises(ValueError):
        bond_orders(np.array([6.5, 1.0]), np.zeros((2, 3)))
    with pytest.raises(ValueError):
        bond_orders(z, pos[:3])


def test_helpers_agree():
    z, pos = ethylene()
    d = pairwise_distances(pos)
    orders = bond_orders_from_distances(z, d)
    np.testing.assert_array_equal(orders, bond_orders(z, pos))
    s1, n1 = stability_from_orders(z, orders)
    s2, n2 = atom_stability(z, pos)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(n1, n2)
