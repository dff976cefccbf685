"""The molecule functions of the Python API (and of the ``eval-molecules`` / ``qm9-property`` commands): score
molecule files and QM9 splits with EDM's and the generated-graph protocols, and run EDM's property-conditioning
protocol on two checkpoints."""

from __future__ import annotations

from pathlib import Path
from .relax import relax_molecules
from ..loading import load_config as _load
from .flow_task import QM9FlowTask, check_vocabulary
from .graph_mol import read_graph_sdf
from .graph_metrics import evaluate_graphs
from .qm9 import QM9
from ..api import load_model
from ..config import ConfigError
from .flow_task import QM9FlowTask
from .property_protocol import property_protocol
from .property_task import PropertyTask

__all__ = ["evaluate_molecule_file", "evaluate_graph_file", "evaluate_dataset", "evaluate_property_conditioning"]


def evaluate_graph_file(
    path: str | Path, *, novelty: bool = True, reference: int = 2000, mmff: int = 200,
    cache_dir: str | Path | None = None, progress: bool = True,
):
    """Score the molecules of an SDF file *with their own bonds and charges* (the generated-graph protocol,
    :mod:`moldiff.molecules.graph_metrics`) and with EDM's distance rule; distribution distances against
    ``reference`` molecules of QM9's test split, novelty against its training graphs.  Elements outside QM9's
    (H, C, N, O, F) and formal charges outside -1..1 are an error naming them; chemically invalid graphs are
    scored as invalid."""
    mols, task = _graph_file(path, reference, cache_dir)
    return evaluate_graphs_of(mols, task, novelty=novelty, mmff=mmff, progress=progress)


def relax_graph_file(
    path: str | Path, *, method: str = "mmff", max_iters: int = 200, novelty: bool = True, reference: int = 2000,
    mmff: int = 200, cache_dir: str | Path | None = None, progress: bool = True,
):
    """:func:`evaluate_graph_file` before and after relaxing the molecules (:func:`~moldiff.molecules.relax.
    relax_molecules`): ``(before, after, report, relaxed molecules)``."""
    mols, task = _graph_file(path, reference, cache_dir)
    relaxed, report = relax_molecules(mols, force_field=method, max_iters=max_iters, progress=progress)
    before = evaluate_graphs_of(mols, task, novelty=novelty, mmff=mmff, progress=progress)
    after = evaluate_graphs_of(relaxed, task, novelty=novelty, mmff=mmff, progress=progress)
    return before, after, report, relaxed


def _graph_file(path, reference: int, cache_dir):
    if Path(path).suffix.lower() != ".sdf":
        raise ValueError(f"{path}: the generated-graph protocol reads bonds and charges from an .sdf file")
    mols = _nonempty(read_graph_sdf(path), path)
    check_vocabulary(mols, where=str(path))
    cfg = _load({"task": "qm9_flow", "data": {"cache_dir": None if cache_dir is None else str(cache_dir)},
                 "eval": {"reference": reference}})
    return mols, QM9FlowTask(cfg)


def evaluate_graphs_of(mols, task, *, novelty: bool, mmff: int, progress: bool):
    return evaluate_graphs(mols, reference=task.reference(), training_smiles=task.training_smiles() if novelty else None,
                           mmff=mmff, progress=progress)


def _qm9_reference(novelty: bool, cache_dir, progress: bool) -> set[str] | None:
    if not novelty:
        return None

    return QM9.load(cache_dir, progress=progress).pipeline_smiles("train", progress=progress)


def evaluate_molecule_file(
    path: str | Path, *, novelty: bool = True, cache_dir: str | Path | None = None, progress: bool = True
):
    """Score the molecules of an SDF / xyz / extxyz file with the EDM protocol
    (:class:`~moldiff.molecules.evaluate.MoleculeMetrics`); novelty is against QM9's training split."""
    from .evaluate import evaluate_molecules  # lazy: RDKit loads only when molecules are read or scored
    from .io import read_molecules  # lazy: RDKit loads only when molecules are read or scored

    mols = _nonempty(read_molecules(path), path)
    return evaluate_molecules(mols, reference_smiles=_qm9_reference(novelty, cache_dir, progress), progress=progress)


def _nonempty(mols: list, path) -> list:
    """``mols``, or :class:`~moldiff.molecules.io.MoleculeFileError` (exit 2) for a file without molecules."""
    from .io import MoleculeFileError  # lazy: RDKit loads only when molecules are read or scored

    if not mols:
        raise MoleculeFileError(f"{path}: holds no molecules; nothing to score")
    return mols


def evaluate_dataset(
    name: str = "qm9",
    split: str = "train",
    *,
    limit: int | None = None,
    novelty: bool = True,
    cache_dir: str | Path | None = None,
    progress: bool = True,
):
    """Score a dataset split itself (EDM's "data" row): ``limit`` takes its first molecules only."""
    from .evaluate import evaluate_molecules  # lazy: RDKit loads only when molecules are read or scored

    if name != "qm9":
        raise ValueError(f"unknown dataset {name!r}; available: qm9")
    qm9 = QM9.load(cache_dir, progress=progress)
    rows = qm9.split(split)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        rows = rows[:limit]
    ref = _qm9_reference(novelty, cache_dir, progress)
    return evaluate_molecules(qm9.molecules(rows), reference_smiles=ref, progress=progress)


def evaluate_property_conditioning(generator: str | Path, regressor: str | Path, *, n: int = 1000,
                                   n_reference: int = 10000, steps: int | None = None, seed: int = 0,
                                   device: str = "auto", progress: bool = True):
    """EDM's property-conditioning protocol on two checkpoints (a ``qm9_flow`` model with ``condition.property``
    and a ``qm9_property`` regressor trained on the other half):
    :class:`~moldiff.molecules.property_protocol.PropertyProtocolResult`."""
    import torch


    gen_task, gen_model = load_model(generator, device=device)
    reg_task, reg_model = load_model(regressor, device=device)
    if not isinstance(gen_task, QM9FlowTask):
        raise ConfigError(f"{generator}: a qm9_flow checkpoint is needed as the generator, got task {gen_task.name!r}")
    if not isinstance(reg_task, PropertyTask):
        raise ConfigError(f"{regressor}: a qm9_property checkpoint is needed as the regressor, got task "
                          f"{reg_task.name!r}")
    gen = torch.Generator(device=next(gen_model.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        return property_protocol(gen_task, gen_model, reg_task, reg_model, n=n, n_reference=n_reference, steps=steps,
                                 generator=gen, progress=progress)
