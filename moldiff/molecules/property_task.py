"""The judge of property-conditioned generation: an EGNN regressor of one QM9 property (EDM's §5.2 protocol).

Trained on the *first* half of EDM's training split (``data.half: first``) with an L1 loss on the property
normalised by its mean and mean absolute deviation, as EDM's regressor; it reads positions and elements only.
Its evaluation is the MAE (in the property's unit) on the first ``eval.n_valid`` molecules of the validation split.
:func:`moldiff.molecules.property_protocol.property_protocol` then scores a conditional generator with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
from torch import nn

from ..config import ExperimentConfig, raise_failed
from ..tasks import EvalResult, Task
from .batches import BatchPlan
from .features import ELEMENTS, UnsupportedElementError
from .properties import CONDITIONING_PROPERTIES, HALVES, PropertyScale, property_spec, property_values
from .task import QM9Data, QM9Source
from ..nn.regressor import EGNNRegressor
from ..progress import progress_bar

__all__ = ["PropertyConfig", "PropertyTask", "AtomBatch", "atom_batch"]


@dataclass
class RegressorModel:
    hidden: int = 128
    layers: int = 6
    coords_range: float = 15.0


@dataclass
class RegressorEval:
    n_valid: int = 2000  #: validation molecules scored (0: the whole split)
    batch_size: int = 500


def _first_half() -> QM9Data:
    return QM9Data(half="first")


@dataclass
class PropertyConfig(ExperimentConfig):
    task: str = "qm9_property"
    property: str = "alpha"  #: alpha | gap | homo | lumo | mu | cv
    data: QM9Data = field(default_factory=_first_half)
    model: RegressorModel = field(default_factory=RegressorModel)
    eval: RegressorEval = field(default_factory=RegressorEval)

    def check(self) -> None:
        raise_failed([
            (self.property in CONDITIONING_PROPERTIES, "property", f"must be one of {sorted(CONDITIONING_PROPERTIES)}"),
            (self.data.half in HALVES, "data.half", f"must be one of {HALVES}"),
            (self.data.max_train >= 0, "data.max_train", "must be >= 0 (0: the whole half)"),
            (self.data.bucket_batches >= 1, "data.bucket_batches", "must be >= 1"),
            (self.model.hidden >= 1, "model.hidden", "must be >= 1"),
            (self.model.layers >= 1, "model.layers", "must be >= 1"),
            (self.eval.n_valid >= 0, "eval.n_valid", "must be >= 0"),
            (self.eval.batch_size >= 1, "eval.batch_size", "must be >= 1"),
        ])


@dataclass
class AtomBatch:
    """Molecules as positions and elements only: ``pos [N, 3]`` Å (zero CoM), ``atoms [N]`` element classes,
    ``batch [N]`` molecule of each atom; ``y [G]`` the normalised property (training) or ``None``."""

    pos: torch.Tensor
    atoms: torch.Tensor
    batch: torch.Tensor
    num_graphs: int
    max_nodes: int
    y: torch.Tensor | None = None

    def to(self, device) -> "AtomBatch":
        y = None if self.y is None else self.y.to(device)
        return AtomBatch(self.pos.to(device), self.atoms.to(device), self.batch.to(device), self.num_graphs,
                         self.max_nodes, y)


_ELEMENT_CLASS = np.full(256, -1, dtype=np.int64)
_ELEMENT_CLASS[list(ELEMENTS)] = np.arange(len(ELEMENTS))


def atom_batch(molecules: list[tuple[np.ndarray, np.ndarray]]) -> AtomBatch:
    """An :class:`AtomBatch` from ``[(atomic_numbers [n], positions [n, 3]), ...]`` (positions centred)."""
    if not molecules or any(len(z) == 0 for z, _ in molecules):
        raise ValueError("every molecule needs at least one atom")
    z = np.concatenate([np.asarray(z, dtype=np.int64) for z, _ in molecules])
    if ((z < 0) | (z > 255)).any() or (_ELEMENT_CLASS[np.clip(z, 0, 255)] < 0).any():
        raise UnsupportedElementError(f"unsupported element(s) {sorted(set(z.tolist()) - set(ELEMENTS))}; "
                                      f"the regressor knows {list(ELEMENTS)}")
    pos = np.concatenate([np.asarray(p, dtype=np.float64) - np.asarray(p, dtype=np.float64).mean(0)
                          for _, p in molecules])
    if not np.isfinite(pos).all():
        raise ValueError("non-finite atom positions")
    sizes = np.array([len(a) for a, _ in molecules])
    return AtomBatch(torch.from_numpy(pos).float(), torch.from_numpy(_ELEMENT_CLASS[z]),
                     torch.from_numpy(np.repeat(np.arange(len(molecules)), sizes)), len(molecules), int(sizes.max()))


class PropertyTask(QM9Source, Task):
    name = "qm9_property"
    config_class = PropertyConfig

    def __init__(self, cfg: PropertyConfig):
        super().__init__(cfg)
        cfg.check()
        self.spec = property_spec(cfg.property)
        self._scale: PropertyScale | None = None

    @property
    def train_rows(self) -> np.ndarray:
        return self.split_rows()

    def values(self, rows: np.ndarray) -> np.ndarray:
        return property_values(self.qm9, self.cfg.property, rows)

    @property
    def scale(self) -> PropertyScale:
        """Mean and mean absolute deviation of the property on the training rows."""
        if self._scale is None:
            self._scale = PropertyScale.fit(self.values(self.train_rows))
        return self._scale

    def build_model(self) -> nn.Module:
        m = self.cfg.model
        return EGNNRegressor(len(ELEMENTS), hidden=m.hidden, layers=m.layers, coords_range=m.coords_range)

    def train_batches(self, *, start_step: int, rank: int, world_size: int, device) -> Iterator[AtomBatch]:
        rows = self.train_rows
        plan = BatchPlan(self.qm9.num_atoms[rows], self.cfg.train.batch_size, self.cfg.seed, self.cfg.data.bucket_batches)
        step = start_step
        while True:
            picked = rows[plan.rows(step, rank, world_size)]
            b = atom_batch(self.qm9.molecules(picked))
            b.y = torch.as_tensor(self.scale.normalize(self.values(picked)), dtype=torch.float32)
            yield b.to(device)
            step += 1

    def loss(self, model: nn.Module, batch: AtomBatch, generator: torch.Generator) -> torch.Tensor:
        pred = model(batch.pos, batch.atoms, batch.batch, batch.num_graphs, batch.max_nodes)
        return (pred.float() - batch.y).abs()

    @torch.no_grad()
    def predict(self, model: nn.Module, molecules: list[tuple[np.ndarray, np.ndarray]], *,
                progress: bool = False) -> np.ndarray:
        """The property (its protocol unit) of ``[(atomic_numbers, positions), ...]``, ``[len(molecules)]``."""
        device = next(model.parameters()).device
        order = np.argsort([len(z) for z, _ in molecules], kind="stable")
        out = np.empty(len(molecules))
        bs = self.cfg.eval.batch_size
        for s in progress_bar(range(0, len(order), bs), enabled=progress, desc=f"predicting {self.cfg.property}"):
            idx = order[s : s + bs]
            b = atom_batch([molecules[i] for i in idx]).to(device)
            out[idx] = self.scale.denormalize(model(b.pos, b.atoms, b.batch, b.num_graphs, b.max_nodes).double().cpu().numpy())
        return out

    def evaluate(self, model: nn.Module, *, generator: torch.Generator, progress: bool = True) -> EvalResult:
        import matplotlib.pyplot as plt

        rows = self.qm9.split("valid")
        k = self.cfg.eval.n_valid
        rows = rows[:k] if k else rows
        truth = self.values(rows)
        pred = self.predict(model, self.qm9.molecules(rows), progress=progress)
        mae = float(np.abs(pred - truth).mean())
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.scatter(truth, pred, s=3, alpha=0.4)
        lo, hi = float(truth.min()), float(truth.max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set(xlabel=f"{self.spec.symbol} ({self.spec.unit}), DFT", ylabel=f"{self.spec.symbol}, regressor",
               title=f"validation MAE {mae:.3g} {self.spec.unit} ({len(rows)} molecules)")
        fig.tight_layout()
        return EvalResult(metrics={"valid_mae": mae}, figures={"parity": fig})
