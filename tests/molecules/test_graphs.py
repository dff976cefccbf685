"""QM9 graph extraction: bonds from the geometry, orders and charges from the SMILES template."""

from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem

from moldiff.molecules.graph_mol import GraphMolecule, read_graph_sdf, to_rdkit, write_graph_sdf
from moldiff.molecules.graphs import STATUS, QM9Graphs, extract_graph
from moldiff.molecules.qm9 import QM9

ZWITTERION, PYRIDINE, ACETYLENE, HCN = 263, 209, 3, 4  # rows of the index-sorted QM9
EXTRA_BOND, MISSING_BOND = 101, 637  # bicyclo[1.1.1]pentane; a strained oxa-bicycle


@pytest.fixture(scope="module")
def qm9():
    return QM9.load(progress=False)


def _mol(qm9, row):
    m = qm9.molecule(row)
    g, reason = extract_graph(m.atomic_numbers, m.positions, str(qm9.smiles[row]))
    assert reason == "ok", reason
    return GraphMolecule(m.atomic_numbers, g.charges, m.positions, g.bonds)


def _same_as_template(qm9, row, mol):
    rd = to_rdkit(mol, sanitize=True)
    ours = Chem.CanonSmiles(Chem.MolToSmiles(Chem.RemoveHs(rd), isomericSmiles=False))
    theirs = Chem.CanonSmiles(Chem.MolToSmiles(Chem.MolFromSmiles(str(qm9.smiles[row])), isomericSmiles=False))
    assert ours == theirs


def test_zwitterion_has_its_charges(qm9):
    assert str(qm9.smiles[ZWITTERION]) == "[NH3+]CCC([O-])=O"
    mol = _mol(qm9, ZWITTERION)
    charged = {(int(z), int(q)) for z, q in zip(mol.atomic_numbers, mol.charges) if q}
    assert charged == {(7, 1), (8, -1)}
    assert mol.charges.sum() == 0
    _same_as_template(qm9, ZWITTERION, mol)


def test_aromatic_ring_is_kekulized(qm9):
    mol = _mol(qm9, PYRIDINE)
    heavy = mol.atomic_numbers > 1
    ring = [(i, j, o) for i, j, o in mol.bonds if heavy[i] and heavy[j]]
    assert sorted(o for *_, o in ring) == [1, 1, 1, 2, 2, 2]  # alternating single / double
    rd = to_rdkit(mol, sanitize=True)
    assert all(a.GetIsAromatic() for a in rd.GetAtoms() if a.GetAtomicNum() > 1)  # RDKit re-perceives it
    _same_as_template(qm9, PYRIDINE, mol)


@pytest.mark.parametrize("row,pair", [(ACETYLENE, (6, 6)), (HCN, (6, 7))])
def test_triple_bonds(qm9, row, pair):
    mol = _mol(qm9, row)
    triples = [(mol.atomic_numbers[i], mol.atomic_numbers[j]) for i, j, o in mol.bonds if o == 3]
    assert len(triples) == 1 and tuple(sorted(map(int, triples[0]))) == pair


def test_mismatches_are_counted_by_reason(qm9):
    table = QM9Graphs.build(qm9, [ZWITTERION, PYRIDINE, EXTRA_BOND, MISSING_BOND], progress=False)
    assert table.reason(EXTRA_BOND) == "geometry_extra_bond"
    assert table.reason(MISSING_BOND) == "geometry_missing_bond"
    assert table.failure_counts() == {"ok": 2, "geometry_missing_bond": 1, "geometry_extra_bond": 1}
    assert table.usable([ZWITTERION, EXTRA_BOND, PYRIDINE]).tolist() == [ZWITTERION, PYRIDINE]
    with pytest.raises(ValueError, match="geometry_extra_bond"):
        table.graph(EXTRA_BOND)
    assert set(STATUS) >= set(table.failure_counts())


def test_graph_sdf_round_trip(qm9, tmp_path):
    mols = [_mol(qm9, r) for r in (ZWITTERION, PYRIDINE, HCN)]
    path = write_graph_sdf(tmp_path / "g.sdf", mols)
    back = read_graph_sdf(path)
    for a, b in zip(mols, back):
        np.testing.assert_array_equal(a.atomic_numbers, b.atomic_numbers)
        np.testing.assert_array_equal(a.charges, b.charges)
        np.testing.assert_array_equal(a.bonds, b.bonds)
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-4)


def test_pyg_data_has_bonds_and_charges(qm9):
    table = QM9Graphs.build(qm9, [ZWITTERION], progress=False)
    d = qm9.to_pyg(ZWITTERION, graphs=table)
    n = len(d.z)
    assert d.edge_index.shape[0] == 2 and d.edge_index.shape[1] == 2 * len(table.graph(ZWITTERION).bonds)
    assert d.edge_attr.shape == (d.edge_index.shape[1],) and set(d.edge_attr.tolist()) <= {1, 2, 3}
    assert d.charges.shape == (n,) and d.charges.sum() == 0
