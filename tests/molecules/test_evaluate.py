"""EDM's validity / uniqueness / novelty pipeline and the metrics container."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rdkit import Chem, rdBase

from moldiff.molecules.evaluate import (
    OVERLAP_DISTANCE,
    Molecule,
    MoleculeMetrics,
    build_rdkit_mol,
    evaluate_molecules,
    molecule_smiles,
)
from moldiff.molecules.io import read_molecules
from tests.molecules.test_bonds import acetylene, ammonium, carbon_monoxide, ethylene, methane, pair, water

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
    assert m.validity_strict == pytest.approx(3 / 7) and m.n_valid_strict == 3  # all valid ones are connected
    assert list(d) == [
        "n", "atom_stability", "mol_stability", "validity", "validity_strict", "uniqueness", "valid_and_unique",
        "novelty", "failures",
    ]
    assert json.loads(json.dumps(d)) == d
    table = m.table()
    assert "validity" in table and "42.86 %" in table and "sanitize:valence" in table
    assert "strict validity" in table


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
        (np.array([54]), np.zeros((1, 3))),  # xenon: an element outside EDM's tables
        (np.append(z_w, 54), np.vstack([p_w, [0, 0, 3.0]])),  # water + xenon
        (np.array([6, 1]), np.full((2, 3), np.inf)),
        (np.array([0, 200]), np.eye(2, 3)),  # no element, out-of-range atomic number
    ]
    m = evaluate_molecules(molecules, reference_smiles=set(), progress=True)
    assert m.n == 7
    f = m.failures
    assert f["single_atom"] == 2 and f["overlapping_atoms"] == 1 and f["unsupported_element:Xe"] == 2
    assert f["non_finite_positions"] == 1 and f["unstable_atoms:Xe"] == 2
    assert f["unsupported_element:X"] == 1 and f["unsupported_element:Z200"] == 1
    # valid: the lone C ("C", implicit H as in EDM); maybe the cloud
    assert 1 <= m.n_valid <= 2
    assert m.novelty == 1.0


def test_overlapping_atoms_are_invalid_and_unstable():
    # EDM's rule bonds two H 0.002 Å apart: by it alone H2 would be stable and valid.
    close = pair(1, 1, 0.002)
    m = evaluate_molecules([close])
    assert m.validity == 0.0 and m.validity_strict == 0.0 and m.mol_stability == 0.0 and m.atom_stability == 0.0
    assert m.failures == {"overlapping_atoms": 1, "unstable_atoms:H": 2}
    assert molecule_smiles(*close) is None
    # only the overlapping atoms are unstable: methane with a fifth H on top of another
    z, pos = methane()
    m = evaluate_molecules([(np.append(z, 1), np.vstack([pos, pos[1] + [0.002, 0, 0]]))])
    assert m.atom_stability == pytest.approx(3 / 6) and m.validity == 0.0
    # just beyond the threshold EDM's rule applies unchanged
    m = evaluate_molecules([pair(1, 1, OVERLAP_DISTANCE + 0.01), pair(1, 1, 0.74)])
    assert m.validity == 1.0 and m.mol_stability == 1.0 and "overlapping_atoms" not in m.failures


def test_scattered_atoms_are_valid_by_edms_rule_but_not_strictly():
    # EDM keeps the largest fragment: methane's atoms 1e6 Å apart give five one-atom fragments, the first
    # (the C, with implicit hydrogens) sanitizes, so EDM's rule calls it valid.  It is not one molecule.
    z, pos = methane()
    scattered = (z, pos * 1e6)
    m = evaluate_molecules([scattered])
    assert m.validity == 1.0 and m.validity_strict == 0.0
    assert m.mol_stability == 0.0 and m.failures["disconnected"] == 1
    m = evaluate_molecules([scattered, methane()])
    assert m.validity == 1.0 and m.validity_strict == 0.5 and m.n_valid_strict == 1
    assert m.as_dict()["validity_strict"] == 0.5 and "50.00 %" in m.table()
    # two molecules far apart: valid (the larger one), not strictly valid
    z2, p2 = _shifted(water(), [1e6, 0, 0])
    m = evaluate_molecules([(np.concatenate([z, z2]), np.vstack([pos, p2]))])
    assert m.validity == 1.0 and m.validity_strict == 0.0 and m.mol_stability == 1.0


def _embedded(smiles: str, seed: int = 7):
    """``(Z, positions, formal charges)`` of a molecule embedded by RDKit (ETKDG, all hydrogens)."""
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=seed) == 0
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    q = np.array([a.GetFormalCharge() for a in mol.GetAtoms()])
    return z, mol.GetConformer().GetPositions(), q


@pytest.mark.parametrize(
    "smiles, edm_smiles",
    [("[NH4+]", "[H][N+]([H])([H])[H]"), ("[OH3+]", "[H][O+]([H])[H]"), ("C[NH3+]", None), ("[OH-]", "[H][O-]")],
)
def test_charged_molecules_are_scored_with_their_charges(smiles, edm_smiles):
    z, pos, q = _embedded(smiles)
    assert q.any()
    charged = evaluate_molecules([(z, pos, q)])
    assert charged.mol_stability == 1.0 and charged.validity == 1.0 and charged.validity_strict == 1.0
    got = molecule_smiles(z, pos, q)
    assert Chem.MolToSmiles(Chem.MolFromSmiles(got)) == Chem.MolToSmiles(Chem.MolFromSmiles(smiles))
    if edm_smiles is not None:
        assert got == edm_smiles
    # the same atoms without their charges: a charged atom's valence is not that of the neutral element
    neutral = evaluate_molecules([(z, pos)])
    assert neutral.mol_stability == 0.0
    assert evaluate_molecules([Molecule(z, pos, q)]).as_dict() == charged.as_dict()


def test_charged_atom_names_in_failures():
    # an ammonium ion given the wrong charge: N- allows 2 bonds (as O), so its 4 bonds are unstable
    z, pos = ammonium()
    m = evaluate_molecules([(z, pos, np.array([-1, 0, 0, 0, 0]))])
    assert m.failures["unstable_atoms:N-"] == 1 and m.mol_stability == 0.0 and m.validity == 0.0
    assert evaluate_molecules([(z, pos, np.array([1, 0, 0, 0, 0]))]).mol_stability == 1.0
    with pytest.raises(ValueError, match="charges"):
        evaluate_molecules([(z, pos, np.array([1, 0]))])


def test_nitro_group_bonds_come_from_distances():
    # nitromethane with N=O 1.21 Å and N-O 1.36 Å: N+ (4 bonds) and O- (1 bond) are stable; with both N-O at
    # 1.22 Å (the resonant geometry) EDM's rule sees two double bonds: N+ has 5, O- has 2
    z, pos, q = _embedded("C[N+](=O)[O-]")
    assert z[:4].tolist() == [6, 7, 8, 8] and q[:4].tolist() == [0, 1, 0, -1]

    def with_lengths(double, single):
        p = pos.copy()
        for o, length in ((2, double), (3, single)):
            p[o] = p[1] + length * (p[o] - p[1]) / np.linalg.norm(p[o] - p[1])
        return z, p, q

    m = evaluate_molecules([with_lengths(1.21, 1.36)])
    assert m.mol_stability == 1.0 and m.validity == 1.0
    m = evaluate_molecules([with_lengths(1.22, 1.22)])
    assert m.mol_stability == 0.0 and m.validity == 0.0
    assert m.failures == {"unstable_atoms:N+": 1, "unstable_atoms:O-": 1, "sanitize:valence": 1}


def test_charged_sdf_file_is_scored_with_its_charges(tmp_path):
    # written by RDKit itself (its own writer, not ours), read back by read_molecules, then scored
    from rdkit.Chem import AllChem

    path = tmp_path / "ions.sdf"
    writer = Chem.SDWriter(str(path))
    for smi in ("[NH4+]", "C[NH3+]"):
        mol = Chem.AddHs(Chem.MolFromSmiles(smi))
        AllChem.EmbedMolecule(mol, randomSeed=3)
        writer.write(mol)
    writer.close()
    mols = read_molecules(path)
    assert [int(m.charges.sum()) for m in mols] == [1, 1]
    m = evaluate_molecules(mols)
    assert m.mol_stability == 1.0 and m.validity == 1.0 and m.validity_strict == 1.0
    assert evaluate_molecules([(z, pos) for z, pos in mols]).mol_stability == 0.0  # charges dropped


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
