"""EDM's validity / uniqueness / novelty pipeline and the metrics container."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rdkit import Chem, rdBase

from moldiff.molecules.evaluate import MoleculeMetrics, build_rdkit_mol, evaluate_molecules, molecule_smiles
from tests.molecules.test_bonds import acetylene, ammonium, carbon_monoxide, ethylene, methane, water

# EDM's pipeline writes Chem.MolToSmiles of the molecule as built, so the hydrogen atoms of the point
# cloud stay explicit in the SMILES ("[H]O[H]", not "O").
WATER, METHANE = "[H]O[H]", "[H]C([H])([H])[H]"
ETHYLENE, ACETYLENE = "[H]C([H])=C([H])[H]", "[H]C#C[H]"


def _heavy(smiles: str) -> str:
    return Chem.MolToSmiles(Chem.RemoveHs(Chem.MolFromSmiles(smiles)))


def _shifted(mol, shift):
    z, pos = mol
    return z, pos + np.asarray(shift, dtype=np.float64)


@pytest.mark.parametrize(
    "builder, smiles, heavy",
    [(water, WATER, "O"), (methane, METHANE, "C"), (ethylene, ETHYLENE, "C=C"), (acetylene, ACETYLENE, "C#C")],
)
def test_smiles_of_small_molecules(builder, smiles, heavy):
    assert molecule_smiles(*builder()) == smiles
    assert _heavy(smiles) == heavy


def test_invalid_molecules_have_no_smiles():
    # Neutral NH4: N with four bonds fails RDKit's valence check.  CO: EDM's rule gives C#O, and a neutral
    # O with three bonds fails the valence check too.
    assert molecule_smiles(*ammonium()) is None
    assert molecule_smiles(*carbon_monoxide()) is None
    assert molecule_smiles(np.array([8, 1, 54]), np.zeros((3, 3)) + np.arange(3)[:, None]) is None
    assert molecule_smiles(np.zeros(0, dtype=int), np.zeros((0, 3))) is None
    z, pos = water()
    assert molecule_smiles(z, np.where(np.arange(3)[:, None] == 1, np.nan, pos)) is None


def test_single_atom_gets_implicit_hydrogens_as_in_edm():
    # EDM builds Chem.Atom(symbol) without forbidding implicit hydrogens: a lone C sanitizes as methane.
    assert molecule_smiles(np.array([6]), np.zeros((1, 3))) == "C"


def test_largest_fragment():
    z1, p1 = water()
    z2, p2 = _shifted(methane(), [10.0, 0, 0])
    assert molecule_smiles(np.concatenate([z1, z2]), np.vstack([p1, p2])) == METHANE
    z3, p3 = _shifted(water(), [0, 10.0, 0])
    assert molecule_smiles(np.concatenate([z1, z3]), np.vstack([p1, p3])) == WATER


def test_build_rdkit_mol():
    z, pos = ethylene()
    mol = build_rdkit_mol(z, pos)
    assert [a.GetAtomicNum() for a in mol.GetAtoms()] == z.tolist()
    bonds = {(b.GetBeginAtomIdx(), b.GetEndAtomIdx()): b.GetBondType() for b in mol.GetBonds()}
    assert bonds[(1, 0)] == Chem.BondType.DOUBLE and len(bonds) == 5
    np.testing.assert_allclose(mol.GetConformer().GetPositions(), pos)
    assert build_rdkit_mol(z, pos, conformer=False).GetNumConformers() == 0
    with pytest.raises(ValueError):
        build_rdkit_mol(np.array([6, 300]), np.zeros((2, 3)))


def test_metrics_arithmetic():
    z_nan, p_nan = water()
    p_nan = p_nan.copy()
    p_nan[0] = np.nan
    molecules = [
        water(),
        _shifted(water(), [5.0, 1.0, -2.0]),  # same molecule elsewhere: duplicate SMILES
        methane(),
        ammonium(),  # 4 of 5 atoms stable, invalid
        carbon_monoxide(),  # 0 of 2 stable, invalid
        (z_nan, p_nan),  # 0 of 3 stable, invalid
        (np.zeros(0, dtype=int), np.zeros((0, 3))),  # empty: invalid, unstable
    ]
    m = evaluate_molecules(molecules, reference_smiles={WATER, "CCO"})
    assert m.n == 7 and m.n_atoms == 21 and m.n_valid == 3 and m.n_unique == 2 and m.n_novel == 1
    assert m.atom_stability == pytest.approx((3 + 3 + 5 + 4) / 21)
    assert m.mol_stability == pytest.approx(3 / 7)
    assert m.validity == pytest.approx(3 / 7)
    assert m.uniqueness == pytest.approx(2 / 3)
    assert m.valid_and_unique == pytest.approx(2 / 7)
    assert m.novelty == pytest.approx(1 / 2)  # methane is novel, water is not
    assert m.failures == {
        "sanitize:valence": 2,
        "unstable_atoms:N": 1,
        "unstable_atoms:C": 1,
        "unstable_atoms:O": 2,
        "unstable_atoms:H": 2,
        "non_finite_positions": 1,
        "empty": 1,
    }
    d = m.as_dict()
    assert list(d) == [
        "n", "atom_stability", "mol_stability", "validity", "uniqueness", "valid_and_unique", "novelty", "failures",
    ]
    assert json.loads(json.dumps(d)) == d
    table = m.table()
    assert "validity" in table and "42.86 %" in table and "sanitize:valence" in table


def test_no_reference_means_no_novelty():
    m = evaluate_molecules([water(), methane()])
    assert m.novelty is None and m.n_novel is None and m.as_dict()["novelty"] is None
    assert m.uniqueness == 1.0 and m.validity == 1.0 and m.mol_stability == 1.0
    assert "-" in m.table()


def test_edge_cases_are_counted_not_raised():
    rng = np.random.default_rng(3)
    cloud = (rng.choice([1, 6, 7, 8, 9], size=10), rng.uniform(0, 10, size=(10, 3)))
    z_w, p_w = water()
    molecules = [
        cloud,
        (np.array([6]), np.zeros((1, 3))),  # single atom
        (np.array([6, 6]), np.zeros((2, 3))),  # overlapping
        (np.array([54]), np.zeros((1, 3))),  # unknown element
        (np.append(z_w, 54), np.vstack([p_w, [0, 0, 3.0]])),  # water + xenon
        (np.array([6, 1]), np.full((2, 3), np.inf)),
    ]
    m = evaluate_molecules(molecules, reference_smiles=set(), progress=True)
    assert m.n == 6
    f = m.failures
    assert f["single_atom"] == 2 and f["overlapping_atoms"] == 1 and f["unknown_element"] == 2
    assert f["non_finite_positions"] == 1 and f["unstable_atoms:Z54"] == 2
    # valid: the lone C ("C", implicit H as in EDM) and the overlapping pair (C#C); maybe the cloud
    assert 2 <= m.n_valid <= 3
    assert m.novelty == 1.0


def test_empty_input_and_no_valid_molecule():
    m = evaluate_molecules([])
    assert m.n == 0 and m.validity == 0.0 and m.uniqueness == 0.0 and m.atom_stability == 0.0
    m = evaluate_molecules([ammonium()], reference_smiles={"C"})
    assert m.validity == 0.0 and m.uniqueness == 0.0 and m.novelty == 0.0
    assert m.atom_stability == pytest.approx(4 / 5)


def test_tensor_inputs():
    z, pos = methane()
    m = evaluate_molecules([(torch.tensor(z), torch.tensor(pos, dtype=torch.float32))])
    assert m.validity == 1.0 and m.mol_stability == 1.0


def test_rdkit_errors_are_silenced_and_logging_restored(capfd):
    before = rdBase.LogStatus()
    evaluate_molecules([ammonium(), carbon_monoxide()])
    assert molecule_smiles(*ammonium()) is None
    err = capfd.readouterr().err
    assert "valence" not in err.lower()
    assert rdBase.LogStatus() == before


def test_metrics_dataclass_defaults():
    m = MoleculeMetrics(n=1, atom_stability=1, mol_stability=1, validity=1, uniqueness=1, valid_and_unique=1, novelty=None)
    assert m.as_dict()["failures"] == {} and isinstance(str(m), str)
