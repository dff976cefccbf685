"""The generated-graph protocol on hand-built molecules with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from moldiff.molecules.graph_metrics import ReferenceStats, evaluate_graphs, graph_smiles, valence_stability
from moldiff.molecules.graph_mol import GraphMolecule

# methane: C at the origin, 4 H on a tetrahedron at 1.09 Å
_T = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3) * 1.09


def methane(shift=0.0):
    return GraphMolecule([6, 1, 1, 1, 1], [0] * 5, np.vstack([[0, 0, 0], _T]) + shift,
                         [[0, 1, 1], [0, 2, 1], [0, 3, 1], [0, 4, 1]])


def water():
    pos = [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]
    return GraphMolecule([8, 1, 1], [0, 0, 0], pos, [[0, 1, 1], [0, 2, 1]])


def hydroxide_ammonium():
    """[NH4+] and [OH-] as two fragments: stable, valid, but disconnected."""
    pos = np.vstack([[0, 0, 0], _T * 0.93, [4, 0, 0], [4.97, 0, 0]])
    return GraphMolecule([7, 1, 1, 1, 1, 8, 1], [1, 0, 0, 0, 0, -1, 0], pos,
                         [[0, 1, 1], [0, 2, 1], [0, 3, 1], [0, 4, 1], [5, 6, 1]])


def test_valence_rules_use_the_charges():
    assert valence_stability(methane()).all()
    m = hydroxide_ammonium()
    assert valence_stability(m).all()
    m.charges[0] = 0  # neutral N with four bonds is unstable
    assert valence_stability(m).tolist() == [False] + [True] * 6


def test_valid_molecules_score_perfectly():
    mols = [methane(), water(), methane(0.5)]
    ref = ReferenceStats.from_molecules([methane(), water()])
    res = evaluate_graphs(mols, reference=ref, training_smiles={"C"}, mmff=3)
    g = res.graph
    assert g["atom_stability"] == 1 and g["mol_stability"] == 1 and g["validity"] == 1 and g["connected"] == 1
    assert g["uniqueness"] == pytest.approx(2 / 3) and g["novelty"] == pytest.approx(0.5)  # "O" is new, "C" is not
    assert res.distribution["bond_length_w1"] == pytest.approx(0.0, abs=1e-9)
    assert res.geometry["bond_lengths_ok"] == 1 and res.geometry["clash_rate"] == 0
    assert res.geometry["mmff_molecules"] == 3 and res.geometry["mmff_strain_median"] >= 0
    assert res.edm["mol_stability"] == 1  # EDM's distance rule finds the same bonds here


def test_broken_molecules_are_counted_never_raised():
    pentavalent = GraphMolecule([6, 1, 1, 1, 1, 1], [0] * 6, np.vstack([[0, 0, 0], _T, [0, 0, 1.1]]),
                                [[0, k, 1] for k in range(1, 6)])
    h_bridge = GraphMolecule([1, 1, 1], [0, 0, 0], [[0, 0, 0], [0.8, 0, 0], [1.6, 0, 0]], [[0, 1, 1], [1, 2, 1]])
    nan = GraphMolecule([6, 1], [0, 0], [[0, 0, 0], [np.nan, 0, 0]], [[0, 1, 1]])
    empty = GraphMolecule([], [], np.zeros((0, 3)), np.zeros((0, 3)))
    zwit = hydroxide_ammonium()
    res = evaluate_graphs([pentavalent, h_bridge, nan, empty, zwit, methane()], reference=None, edm=True)
    assert res.n == 6
    assert res.graph["mol_stability"] == pytest.approx(2 / 6)  # the ion pair and methane
    assert res.graph["validity"] == pytest.approx(2 / 6)
    assert res.graph["connected"] == pytest.approx(4 / 6)  # empty and the ion pair are not one fragment
    f = res.failures
    assert f["sanitize:valence"] >= 2 and f["unstable_atom:C"] >= 2 and f["unstable_atom:H"] >= 1
    assert f["disconnected"] == 2 and f["empty"] == 1
    assert graph_smiles(zwit)[0] is not None and graph_smiles(pentavalent)[1] == "sanitize:valence"
    assert all(np.isfinite(v) for v in res.flat().values())


def test_overlapping_atoms_are_never_valid_nor_stable_and_clash():
    """Two bonded atoms at the same point (H2 collapsed; a methane H on its carbon): invalid and unstable in both
    protocols, and a clash, whatever the bonds say."""
    h2 = GraphMolecule([1, 1], [0, 0], [[0, 0, 0], [0, 0, 0]], [[0, 1, 1]])
    m = methane()
    m.positions[1] = m.positions[0] + 0.05
    short = GraphMolecule([1, 1], [0, 0], [[0, 0, 0], [0.3, 0, 0]], [[0, 1, 1]])  # not overlapping, but no bond is 0.3 Å
    ref = ReferenceStats.from_molecules([methane(), water()])
    res = evaluate_graphs([h2, m, short], reference=ref, edm=True)
    assert valence_stability(h2).tolist() == [False, False]
    assert res.graph["validity"] == pytest.approx(1 / 3) and res.graph["mol_stability"] == pytest.approx(1 / 3)
    assert res.failures["overlapping_atoms"] == 2
    assert res.geometry["clash_rate"] == 1.0  # every molecule has a pair closer than 0.5 Å
    assert res.edm["validity"] == pytest.approx(1 / 3)  # EDM's rule bonds the 0.3 Å pair; the overlapping ones fail


def test_pyg_molecules_round_trip_and_are_scored_like_graph_molecules():
    from torch_geometric.data import Batch

    from moldiff.molecules.graph_mol import GraphMolecule, graph_molecules

    water = GraphMolecule([8, 1, 1], [0, 0, 0], [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], [(0, 1, 1), (0, 2, 1)])
    ion = GraphMolecule([7, 1, 1, 1, 1], [1, 0, 0, 0, 0], np.eye(5, 3) * 1.0, [(0, 1, 1), (0, 2, 1), (0, 3, 1), (0, 4, 1)])
    back = GraphMolecule.from_pyg(water.to_pyg())
    for a, b in zip((water.atomic_numbers, water.charges, water.positions, water.bonds),
                    (back.atomic_numbers, back.charges, back.positions, back.bonds)):
        np.testing.assert_array_equal(a, b)
    batch = Batch.from_data_list([water.to_pyg(), ion.to_pyg()])
    mols = graph_molecules(batch)
    assert [m.num_atoms for m in mols] == [3, 5] and mols[1].charges[0] == 1
    from_batch = evaluate_graphs(batch, edm=False).flat()
    from_list = evaluate_graphs([water, ion], edm=False).flat()
    assert from_batch.keys() == from_list.keys()
    assert all(from_batch[k] == from_list[k] or k.endswith("seconds") for k in from_batch)
