"""QM9 with EDM's recipe: E(3)-equivariant diffusion of positions and element types on the shared core.

State: :class:`~moldiff.molecules.features.MoleculeEncoding` (zero-CoM positions, one-hot / 4, Z / 10) in
a :class:`~moldiff.diffusion.spaces.PointCloudSpace`; network: :class:`~moldiff.nn.EGNNDenoiser`
predicting the noise; process: the DDPM ``polynomial_2`` schedule with 1000 levels; loss: per-molecule
eps L2 (:func:`~moldiff.diffusion.losses.denoising_loss`); samplers: the shared ones (ancestral over the
1000 levels is EDM's sampler).  Evaluation samples ``eval.n_samples`` molecules and scores them with the
EDM protocol (:mod:`moldiff.molecules.evaluate`); novelty is against the training molecules' SMILES built
by the same pipeline.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from ..config import (ConfigError, ExperimentConfig, ProcessConfig, SamplerConfig, as_config_error, moved_to_options,
                      raise_failed)
from ..diffusion import Denoiser, PointCloudSpace, denoising_loss, run_sampler
from ..tasks import EvalResult, Task
from .batches import BatchPlan, MoleculeBatch
from .features import MoleculeEncoding
from .properties import HALVES
from .qm9 import QM9
from .properties import train_half
from ..nn.backbones import build_backbone, check_backbone_options
from .draw import molecule_grid

__all__ = ["QM9Config", "QM9Data", "QM9Model", "QM9Eval", "QM9Source", "QM9Task", "Molecules"]

#: ``[(atomic_numbers [n], positions [n, 3] Å), ...]`` -- what sampling returns and the evaluator takes
Molecules = list[tuple[np.ndarray, np.ndarray]]


@dataclass
class QM9Data:
    cache_dir: str | None = None  #: default $MOLDIFF_CACHE/qm9 or ~/.cache/moldiff/qm9
    max_train: int = 0  #: train on the first k molecules of the EDM train split (0: all 100,000)
    bucket_batches: int = 32  #: size-bucketing window in batches (1: plain random batches)
    half: str = ""  #: train on the first or second half of the train split (property protocol), "" for all of it


_EGNN, _E3NN = "egnn", "e3nn"


@moved_to_options("backbone", {"attention": _EGNN, "tanh": _EGNN, "coords_range": _EGNN, "norm_constant": _EGNN,
                               "inv_sublayers": _EGNN, "normalization_factor": _EGNN, "lmax": _E3NN, "parity": _E3NN,
                               "r_max": _E3NN})
@dataclass
class QM9Model:
    """The backbone (:mod:`moldiff.nn.backbones`) and its own ``options``, passed through; defaults: EDM's EGNN (9
    layers x 256, attention, tanh-bounded coordinate updates).  egnn's options: ``attention``, ``tanh``,
    ``coords_range``, ``norm_constant``, ``inv_sublayers``, ``normalization_factor``; e3nn's: ``lmax``, ``parity``,
    ``r_max`` (here 3.0 unless set), ``cutoff``, ``num_basis``, ``radial_hidden``, ``time_dim``."""

    backbone: str = "egnn"  #: egnn | e3nn | package.module:Class
    hidden: int = 256  #: egnn: hidden width; e3nn: channels per irrep order
    layers: int = 9
    options: dict[str, Any] = field(default_factory=dict)  #: the backbone's own keyword arguments
    scale: list[float] = field(default_factory=lambda: [1.0, 4.0, 10.0])  #: positions, one-hot, atomic number
    include_charges: bool = True  #: the atomic-number channel


#: this task's defaults for a backbone's options, under the config's own (QM9 positions are in Å / scale)
BACKBONE_DEFAULTS: dict[str, dict[str, Any]] = {_E3NN: {"r_max": 3.0}}


@dataclass
class QM9Eval:
    n_samples: int = 1000  #: molecules sampled per evaluation
    batch_size: int = 1000  #: molecules per sampling batch
    grid: int = 16  #: molecules drawn in the picture
    trajectory_frames: int = 50  #: frames of one denoising trajectory saved as extxyz (0: none)
    novelty: bool = True  #: score novelty against the training SMILES


def _edm_process() -> ProcessConfig:
    return ProcessConfig(kind="ddpm", schedule="polynomial_2", num_steps=1000, precision=1e-5)


def _edm_sampler() -> SamplerConfig:
    return SamplerConfig(name="ancestral", steps=1000)


@dataclass
class QM9Config(ExperimentConfig):
    task: str = "qm9"
    process: ProcessConfig = field(default_factory=_edm_process)
    sampler: SamplerConfig = field(default_factory=_edm_sampler)
    data: QM9Data = field(default_factory=QM9Data)
    model: QM9Model = field(default_factory=QM9Model)
    eval: QM9Eval = field(default_factory=QM9Eval)

    def check(self) -> None:
        checks = [
            (self.data.max_train >= 0, "data.max_train", "must be >= 0 (0: the whole train split)"),
            (self.data.bucket_batches >= 1, "data.bucket_batches", "must be >= 1"),
            (self.data.half in HALVES, "data.half", f"must be one of {HALVES}"),
            (self.model.hidden >= 1, "model.hidden", "must be >= 1"),
            (self.model.layers >= 1, "model.layers", "must be >= 1"),
            (len(self.model.scale) == 3 and all(s > 0 for s in self.model.scale), "model.scale",
             "needs three positive divisors (positions, one-hot, atomic number)"),
            (self.eval.n_samples >= 0, "eval.n_samples", "must be >= 0"),
            (self.eval.batch_size >= 1, "eval.batch_size", "must be >= 1"),
        ]
        raise_failed(checks)
        self.model.options = as_config_error(check_backbone_options, self.model.backbone, self.model.options)


class QM9Source:
    """What both QM9 tasks share: the dataset (loaded on first use from ``cfg.data.cache_dir``) and the atom-count
    distribution of the training rows (EDM's size sampler).  A subclass defines ``train_rows``."""

    cfg: QM9Config
    _qm9 = None

    @property
    def qm9(self):
        if self._qm9 is None:
            self._qm9 = QM9.load(self.cfg.data.cache_dir, progress=self.progress)
        return self._qm9

    def split_rows(self) -> np.ndarray:
        """The training rows the config names: EDM's train split, or one half of it (``data.half``), cut to its
        first ``data.max_train`` rows when that is set."""
        rows = train_half(self.qm9, self.cfg.data.half)
        k = self.cfg.data.max_train
        return rows[:k] if k else rows

    def size_distribution(self) -> tuple[np.ndarray, np.ndarray]:
        """``(sizes, probabilities)`` of the training molecules' atom counts."""
        sizes, counts = np.unique(self.qm9.num_atoms[self.train_rows], return_counts=True)
        return sizes, counts / counts.sum()


class QM9Task(QM9Source, Task):
    name = "qm9"
    config_class = QM9Config
    sample_formats = (".sdf", ".xyz", ".extxyz")

    def __init__(self, cfg: QM9Config):
        super().__init__(cfg)
        cfg.check()
        self.process = cfg.process.build()
        m = cfg.model
        self.encoding = MoleculeEncoding(scale=tuple(m.scale), include_charges=m.include_charges)
        self._smiles: set[str] | None = None

    # -- data ------------------------------------------------------------------------------------------
    @property
    def train_rows(self) -> np.ndarray:
        return self.split_rows()

    def make_batch(self, rows: np.ndarray) -> MoleculeBatch:
        z, pos, graph = self.qm9.gather(rows)
        x = self.encoding.encode(z, pos, graph, len(rows))
        return MoleculeBatch(x, torch.from_numpy(graph), len(rows), int(self.qm9.num_atoms[rows].max()))

    def train_batches(self, *, start_step: int, rank: int, world_size: int, device) -> Iterator[MoleculeBatch]:
        rows = self.train_rows
        bs = self.cfg.train.batch_size
        if len(rows) < bs:
            raise ConfigError(f"train.batch_size={bs} exceeds the {len(rows)} training molecules (data.max_train)")
        plan = BatchPlan(self.qm9.num_atoms[rows], bs, self.cfg.seed, self.cfg.data.bucket_batches)
        pin = torch.device(device).type == "cuda"
        step = start_step
        while True:
            batch = self.make_batch(rows[plan.rows(step, rank, world_size)])
            if pin:
                batch = MoleculeBatch(batch.x.pin_memory(), batch.graph.pin_memory(), batch.num_graphs, batch.max_nodes)
            yield batch.to(device, non_blocking=True)
            step += 1

    def training_smiles(self) -> set[str]:
        """Canonical SMILES of the training molecules, built by the evaluator's pipeline (for novelty)."""
        if self._smiles is None:
            if self.cfg.data.max_train:
                from .evaluate import molecule_smiles  # lazy: RDKit loads only when molecules are read or scored

                smiles = (molecule_smiles(z, p) for z, p in self.qm9.molecules(self.train_rows))
                self._smiles = {s for s in smiles if s is not None}
            else:
                self._smiles = self.qm9.pipeline_smiles("train")
        return self._smiles

    # -- model and loss --------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        m = self.cfg.model
        try:
            return build_backbone(m.backbone, self.encoding.num_features, hidden=m.hidden, layers=m.layers, pos_dims=3,
                                  options={**BACKBONE_DEFAULTS.get(m.backbone, {}), **m.options})
        except ValueError as e:
            raise ConfigError(f"model.backbone: {e}") from e

    def denoiser(self, model: nn.Module, graph: torch.Tensor, num_graphs: int, max_nodes: int) -> Denoiser:
        space = PointCloudSpace(graph, num_graphs, validate=False)
        return Denoiser(lambda x, t: model(x, t, graph, num_graphs, max_nodes), self.process, "eps", space)

    def loss(self, model: nn.Module, batch: MoleculeBatch, generator: torch.Generator) -> torch.Tensor:
        den = self.denoiser(model, batch.graph, batch.num_graphs, batch.max_nodes)
        return denoising_loss(den, batch.x, generator=generator, **self.cfg.loss.kwargs())

    # -- sampling --------------------------------------------------------------------------------------
    def sample(self, model, n, *, generator, sampler: SamplerConfig | None = None, progress: bool = True,
               sizes: np.ndarray | None = None, trajectory: list | None = None) -> Molecules:
        """``n`` molecules with atom counts drawn from the training histogram (or the given ``sizes``).

        Molecules are sampled in batches of ``eval.batch_size`` grouped by size (little padding) and
        returned in draw order.  If ``trajectory`` is a list, the frames of the first molecule's denoising
        trajectory are appended to it (``eval.trajectory_frames`` of them).
        """
        sampler = sampler or self.cfg.sampler
        device = next(model.parameters()).device
        if sizes is None:
            support, probs = self.size_distribution()
            draw = torch.multinomial(torch.as_tensor(probs, device=device), n, replacement=True, generator=generator)
            sizes = support[draw.cpu().numpy()]
        sizes = np.asarray(sizes, dtype=np.int64)
        order = np.argsort(sizes, kind="stable")
        out: list = [None] * n
        bs = self.cfg.eval.batch_size
        for b, start in enumerate(range(0, n, bs)):
            idx = order[start : start + bs]
            counts = torch.as_tensor(sizes[idx], device=device)
            graph = torch.repeat_interleave(torch.arange(len(idx), device=device), counts)
            den = self.denoiser(model, graph, len(idx), int(sizes[idx].max()))
            x = self.process.prior_sample(torch.zeros(len(graph), 3 + self.encoding.num_features, device=device),
                                          den.space, generator)
            callback = self._trajectory_callback(trajectory, graph, sampler) if (trajectory is not None and b == 0) else None
            with torch.no_grad():
                x = run_sampler(sampler.name, den, x, generator=generator, progress=progress, callback=callback,
                                **sampler.arguments())
            for i, mol in zip(idx, self.encoding.decode_batch(x, graph, len(idx))):
                out[i] = mol
            if callback is not None:
                trajectory.append(self.encoding.decode(x[graph == 0]))
        return out

    def _trajectory_callback(self, frames: list, graph: torch.Tensor, sampler: SamplerConfig):
        every = max(1, sampler.steps // max(self.cfg.eval.trajectory_frames, 1))
        first = graph == 0

        def record(info: dict) -> None:
            if info["i"] % every == 0:
                frames.append(self.encoding.decode(info["x"][first]))

        return record

    # -- evaluation ------------------------------------------------------------------------------------
    def evaluate(self, model, *, generator, progress: bool = True) -> EvalResult:
        from .evaluate import evaluate_molecules  # lazy: RDKit loads only when molecules are read or scored
        from .io import write_sdf, write_xyz  # lazy: RDKit loads only when molecules are read or scored

        ev = self.cfg.eval
        if ev.n_samples == 0:
            return EvalResult()
        frames: list = [] if ev.trajectory_frames else None
        t0 = time.time()
        mols = self.sample(model, ev.n_samples, generator=generator, progress=progress, trajectory=frames)
        seconds = time.time() - t0
        ref = self.training_smiles() if ev.novelty else None
        res = evaluate_molecules(mols, reference_smiles=ref, progress=progress)
        metrics = {k: float(v) for k, v in res.as_dict().items() if isinstance(v, (int, float)) and v is not None}
        metrics["sample_seconds"] = seconds
        metrics["molecules_per_second"] = ev.n_samples / max(seconds, 1e-9)
        out = Path(tempfile.mkdtemp(prefix="moldiff-qm9-eval-"))
        files = {"samples": out / "samples.sdf"}
        write_sdf(files["samples"], mols)
        if frames:
            files["trajectory"] = out / "trajectory.extxyz"
            write_xyz(files["trajectory"], frames)
        title = (f"QM9 samples: mol. stable {res.mol_stability:.1%}, valid {res.validity:.1%} "
                 f"(n={res.n}, {self.cfg.sampler.name} {self.cfg.sampler.steps} steps)")
        return EvalResult(metrics=metrics, figures={"molecules": molecule_grid(mols[: ev.grid], title=title)},
                          files=files)

    def save_samples(self, samples: Molecules, path: Path) -> None:
        from .io import write_sdf, write_xyz  # lazy: RDKit loads only when molecules are read or scored

        path = Path(path)
        if path.suffix.lower() == ".sdf":
            write_sdf(path, samples)
        elif path.suffix.lower() in (".xyz", ".extxyz"):
            write_xyz(path, samples)
        else:
            raise ValueError(f"{path}: molecules are written as .sdf, .xyz or .extxyz")
