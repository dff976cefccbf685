"""Relaxation of generated molecules: MMFF94, UFF where MMFF has no parameters, invalid molecules kept and counted,
validity never lowered in either protocol."""

from __future__ import annotations

import numpy as np
import pytest

from moldiff.molecules.evaluate import score_molecule
from moldiff.molecules.graph_metrics import graph_smiles
from moldiff.molecules.graph_mol import GraphMolecule, from_rdkit
from moldiff.molecules.relax import relax_molecules


def _embedded(smiles: str, noise: float = 0.0, seed: int = 0) -> GraphMolecule:
    from rdkit import Chem
    from rdkit.Chem import AllChem

    rd = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(rd, randomSeed=seed) == 0
    m = from_rdkit(rd)
    pos = m.positions + np.random.default_rng(seed).normal(0, noise, m.positions.shape)
    return GraphMolecule(m.atomic_numbers, m.charges, pos, m.bonds)


def _edm_valid(m: GraphMolecule) -> bool:
    return score_molecule(m.atomic_numbers, m.positions, m.charges).smiles is not None


def test_a_distorted_molecule_is_relaxed_by_mmff_and_keeps_its_graph():
    m = _embedded("CCO", noise=0.15)
    (r,), report = relax_molecules([m], max_iters=500)
    assert report.relaxed == {"mmff": 1} and not report.kept and report.energy_drop[0] > 0
    np.testing.assert_array_equal(r.bonds, m.bonds)
    np.testing.assert_array_equal(r.atomic_numbers, m.atomic_numbers)
    assert graph_smiles(r)[0] == graph_smiles(m)[0] is not None
    np.testing.assert_allclose(r.positions.mean(0), 0, atol=1e-9)
    co = np.linalg.norm(r.positions[1] - r.positions[2])  # the C-O bond relaxes to MMFF's ~1.42 Å
    assert abs(co - 1.42) < 0.03


def test_a_molecule_mmff_cannot_type_falls_back_to_uff():
    m = _embedded("C#[O+]", noise=0.1)
    (_,), report = relax_molecules([m])
    assert report.relaxed == {"uff": 1}
    (_,), report = relax_molecules([_embedded("CCO", noise=0.1)], force_field="uff")
    assert report.relaxed == {"uff": 1}


def test_invalid_or_broken_molecules_are_kept_and_counted():
    five = GraphMolecule([6, 1, 1, 1, 1, 1], [0] * 6, np.random.default_rng(0).normal(0, 1, (6, 3)),
                         [(0, k, 1) for k in range(1, 6)])  # a pentavalent carbon: not sanitisable
    nan = GraphMolecule([8, 1, 1], [0, 0, 0], [[0, 0, 0], [np.nan, 0, 0], [0, 1, 0]], [(0, 1, 1), (0, 2, 1)])
    empty = GraphMolecule(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 3), np.int64))
    out, report = relax_molecules([five, nan, empty])
    assert report.kept == {"invalid_graph": 1, "empty_or_non_finite": 2} and not report.relaxed
    for a, b in zip([five, nan, empty], out):
        assert a is b


@pytest.mark.parametrize("noise", [0.0, 0.1, 0.3])
def test_relaxation_never_lowers_validity(noise):
    mols = [_embedded(s, noise=noise, seed=k) for k, s in enumerate(
        ["CCO", "c1ccccc1", "CC(=O)N", "C#N", "OC1CC1", "[NH3+]CC(=O)[O-]", "FC(F)F", "C1=CC=CN1", "CC#CC"])]
    mols.append(GraphMolecule([6, 6], [0, 0], [[0, 0, 0], [0.3, 0, 0]], [(0, 1, 2)]))  # valence-incomplete, clashing
    out, report = relax_molecules(mols)
    assert report.n == len(mols) and sum(report.relaxed.values()) + sum(report.kept.values()) == len(mols)
    for a, b in zip(mols, out):
        assert (graph_smiles(a)[0] is None) == (graph_smiles(b)[0] is None)  # the graph protocol: unchanged
        assert _edm_valid(b) or not _edm_valid(a)  # EDM's rule: never from valid to invalid


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown force field"):
        relax_molecules([], force_field="amber")
    with pytest.raises(ValueError, match="max_iters"):
        relax_molecules([], max_iters=0)
