"""QM9 with the modern recipe: the molecular graph generated with its geometry by flow matching.

State of a molecule: positions (Å, zero CoM), element, formal charge per atom, and a bond type for every
unordered atom pair (none / single / double / triple, kekulized; see :mod:`moldiff.molecules.graphs`).

* Positions follow the linear :class:`~moldiff.diffusion.processes.FlowPath` from the data to a zero-CoM
  Gaussian; every molecule's Gaussian draw is relabelled and rotated onto it first
  (:func:`~moldiff.diffusion.alignment.align_source_per_graph`: Hungarian + Kabsch, equivariant OT).
* Elements, charges and bonds follow :class:`~moldiff.diffusion.categorical.CategoricalPath` s (discrete flow
  matching; ``flow.categorical: mask | uniform``).
* :class:`~moldiff.nn.molgraph.MolGraphNet` predicts the clean molecule; the loss per molecule is
  ``w_pos * MSE(pos) + w_atoms * CE(atoms) + w_charges * CE(charges) + w_bonds * CE(bonds)`` (means over
  atoms / pairs), with ``t ~ U[0, 1]`` per molecule.
* Sampling: :func:`~moldiff.diffusion.mixed.sample_mixed_flow` with ``sampler.steps`` network evaluations.
* Evaluation: both protocols on the same samples -- EDM's distance-based rule
  (:mod:`moldiff.molecules.evaluate`) and the generated graph (:mod:`moldiff.molecules.graph_metrics`).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np
import torch
from torch import nn

from ..config import (ConfigError, ExperimentConfig, ProcessConfig, SamplerConfig, as_config_error, moved_to_options,
                      raise_failed)
from ..diffusion import (
    CategoricalPath,
    MixedKnown,
    MixedPrediction,
    MixedState,
    PointCloudSpace,
    TIME_GRIDS,
    align_source_per_graph,
    flow_time_grid,
    remove_com,
    sample_mixed_flow,
    sample_time,
)
from ..tasks import EvalResult, Task
from .batches import BatchPlan, size_groups
from .features import ELEMENTS, UnsupportedElementError
from .graph_mol import GraphMolecule, from_rdkit
from .graphs import BOND_ORDERS, CHARGES
from .properties import CONDITIONING_PROPERTIES, HALVES, PropertyScale, property_values
from .task import QM9Data, QM9Source
from .graphs import QM9Graphs
from ..training.trainer import step_seed
from ..nn.backbones import build_graph_backbone, check_backbone_options
from ..progress import progress_bar
from ..fileio import cached_strings
from .graph_metrics import SMILES_VERSION, reference_smiles
from .graph_metrics import ReferenceStats
from .draw import molecule_grid
from .graph_metrics import evaluate_graphs
from .graph_mol import write_graph_sdf
from .relax import relax_molecules

__all__ = ["QM9FlowConfig", "QM9FlowTask", "GraphBatch", "batch_from_molecules", "check_vocabulary", "pair_layout"]


@moved_to_options("backbone", {"coords_range": "molgraph", "lmax": "e3nn", "parity": "e3nn"})
@dataclass
class FlowModel:
    """The backbone (:func:`moldiff.nn.backbones.build_graph_backbone`), the sizes both built-in backbones take, and
    the backbone's own ``options``, passed through (molgraph: ``coords_range``; e3nn: ``lmax``, ``parity``,
    ``radial_hidden``)."""

    backbone: str = "molgraph"  #: molgraph (MolGraphNet) | e3nn (E3MolGraphNet) | package.module:Class
    hidden: int = 128  #: molgraph: width; e3nn: channels per irrep order
    edge: int = 32
    layers: int = 6
    rbf: int = 16
    cutoff: float = 6.0  #: Å, range of the radial basis
    options: dict[str, Any] = field(default_factory=dict)  #: the backbone's own keyword arguments


@dataclass
class FlowRecipe:
    categorical: str = "mask"  #: mask | uniform (the categorical source)
    align: bool = True  #: equivariant OT: relabel + rotate each molecule's Gaussian draw onto it
    align_iterations: int = 3  #: Hungarian / Kabsch alternations
    w_pos: float = 3.0
    w_atoms: float = 0.4
    w_charges: float = 1.0
    w_bonds: float = 2.0
    self_condition: bool = False  #: feed the previous clean-state estimate back to the network (half the batches)
    fake_atoms: float = 0.0  #: FlowMol3's fake atoms: up to this fraction of a molecule's atoms added, to be deleted
    fake_spread: float = 1.0  #: Å: std of a fake atom's offset from the real atom it is placed beside
    coord_noise: float = 0.0  #: Å: std of Gaussian noise on the interpolated training positions (SemlaFlow: 0.2)
    time_grid: str = "uniform"  #: sampling grid: uniform | cosine | quadratic (steps closer near the data)
    eta: float = 0.0  #: sampling: re-masking stochasticity of the token chains (mask prior; 0: none)


@dataclass
class FlowCondition:
    """Property conditioning (EDM's §5.2 protocol: ``data.half: second``, the regressor on the first half)."""

    property: str = ""  #: a QM9 property (alpha, gap, homo, lumo, mu, cv); "" for the unconditional model


@dataclass
class FlowEval:
    n_samples: int = 1000  #: molecules sampled per evaluation
    batch_size: int = 500  #: molecules per sampling batch
    grid: int = 16  #: molecules drawn in the picture
    novelty: bool = True  #: novelty against the training graphs' SMILES
    edm_protocol: bool = True  #: also score with EDM's distance-based rule
    reference: int = 2000  #: test-split molecules for the distribution distances (0: all)
    mmff: int = 200  #: molecules whose MMFF strain energy is computed (0: none)


def _flow_process() -> ProcessConfig:
    return ProcessConfig(kind="flow", sigma=0.0, prior_std=1.0)


def _flow_sampler() -> SamplerConfig:
    return SamplerConfig(name="ode_euler", steps=50)


@dataclass
class QM9FlowConfig(ExperimentConfig):
    task: str = "qm9_flow"
    process: ProcessConfig = field(default_factory=_flow_process)
    sampler: SamplerConfig = field(default_factory=_flow_sampler)
    data: QM9Data = field(default_factory=QM9Data)  #: as EDM's task; max_train: graphs built in memory
    model: FlowModel = field(default_factory=FlowModel)
    flow: FlowRecipe = field(default_factory=FlowRecipe)
    eval: FlowEval = field(default_factory=FlowEval)
    condition: FlowCondition = field(default_factory=FlowCondition)
    resume_mutable: ClassVar[tuple[str, ...]] = (*ExperimentConfig.resume_mutable, "flow.time_grid", "flow.eta")

    def check(self) -> None:
        f = self.flow
        raise_failed([
            (self.process.kind == "flow" and self.process.sigma == 0.0, "process",
             "qm9_flow needs kind: flow with sigma: 0 (the deterministic linear path)"),
            (self.sampler.name == "ode_euler", "sampler.name",
             "qm9_flow samples with the joint flow sampler: use ode_euler (Euler on positions, jumps on tokens)"),
            (f.categorical in ("mask", "uniform"), "flow.categorical", "must be mask or uniform"),
            (f.time_grid in TIME_GRIDS, "flow.time_grid", f"must be one of {TIME_GRIDS}"),
            (f.coord_noise >= 0, "flow.coord_noise", "must be >= 0 (Å)"),
            (0 <= f.fake_atoms <= 1, "flow.fake_atoms", "must be a fraction in [0, 1]"),
            (f.fake_spread > 0, "flow.fake_spread", "must be > 0 (Å)"),
            (not (f.fake_atoms and self.condition.property), "flow.fake_atoms",
             "fake atoms are not available for property-conditioned models"),
            (self.loss.time_distribution in ("uniform", "beta"), "loss.time_distribution",
             "qm9_flow draws training times uniformly or from loss.beta_a/beta_b (beta)"),
            (not f.self_condition or self.model.backbone == "molgraph", "flow.self_condition",
             "self-conditioning is built into the molgraph backbone only"),
            (f.align_iterations >= 1, "flow.align_iterations", "must be >= 1"),
            (f.eta >= 0 and (f.eta == 0 or f.categorical == "mask"), "flow.eta", "must be >= 0 and needs categorical: mask"),
            *[(getattr(f, k) >= 0, f"flow.{k}", "a loss weight must be >= 0") for k in ("w_pos", "w_atoms", "w_charges", "w_bonds")],
            (self.data.max_train >= 0, "data.max_train", "must be >= 0 (0: the whole train split)"),
            (self.data.bucket_batches >= 1, "data.bucket_batches", "must be >= 1"),
            (self.data.half in HALVES, "data.half", f"must be one of {HALVES}"),
            (self.condition.property in ("", *CONDITIONING_PROPERTIES), "condition.property",
             f"must be one of {sorted(CONDITIONING_PROPERTIES)} or empty"),
            (self.model.hidden >= 1, "model.hidden", "must be >= 1"),
            (self.model.layers >= 1, "model.layers", "must be >= 1"),
            (self.model.edge >= 1, "model.edge", "must be >= 1"),
            (self.eval.n_samples >= 0, "eval.n_samples", "must be >= 0"),
            (self.eval.batch_size >= 1, "eval.batch_size", "must be >= 1"),
        ])
        self.model.options = as_config_error(check_backbone_options, self.model.backbone, self.model.options,
                                             graph=True)


@dataclass
class GraphBatch:
    """Molecules as the network sees them (concatenated, PyG-style).

    Attributes:
        pos: ``[N, 3]`` Å, zero CoM per molecule.  atoms, charges: ``[N]`` class indices.
        bonds: ``[P]`` class indices of the unordered pairs ``pair_index [2, P]`` (global atom numbers, i < j).
        batch: ``[N]`` molecule of each atom (sorted).  pair_graph: ``[P]`` molecule of each pair.
        cond: ``[G, 1]`` normalised property of each molecule (conditional models), else ``None``.
    """

    pos: torch.Tensor
    atoms: torch.Tensor
    charges: torch.Tensor
    bonds: torch.Tensor
    batch: torch.Tensor
    pair_index: torch.Tensor
    pair_graph: torch.Tensor
    num_graphs: int
    max_nodes: int
    cond: torch.Tensor | None = None

    def to(self, device) -> "GraphBatch":
        t = {k: getattr(self, k).to(device) for k in ("pos", "atoms", "charges", "bonds", "batch", "pair_index",
                                                     "pair_graph")}
        cond = None if self.cond is None else self.cond.to(device)
        return GraphBatch(**t, num_graphs=self.num_graphs, max_nodes=self.max_nodes, cond=cond)


_TRIU: dict[int, np.ndarray] = {}


def _triu(n: int) -> np.ndarray:
    if n not in _TRIU:
        _TRIU[n] = np.stack(np.triu_indices(n, 1))
    return _TRIU[n]


def pair_layout(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``pair_index [2, P]`` (every unordered pair of every molecule, global atom numbers) and ``pair_graph [P]``."""
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    idx = [_triu(int(n)) + o for n, o in zip(sizes, offsets)]
    graph = [np.full(int(n) * (int(n) - 1) // 2, g) for g, n in enumerate(sizes)]
    return (np.concatenate(idx, axis=1) if idx else np.zeros((2, 0), np.int64)).astype(np.int64), \
        (np.concatenate(graph) if graph else np.zeros(0, np.int64)).astype(np.int64)


def check_vocabulary(mols: list[GraphMolecule], where: str = "molecules") -> None:
    """Raise (naming the molecule and value) for an element outside :data:`ELEMENTS`, a formal charge outside
    :data:`CHARGES` or a bond order outside 1..3."""
    for i, m in enumerate(mols):
        bad_z = sorted(set(m.atomic_numbers.tolist()) - set(ELEMENTS))
        if bad_z:
            raise UnsupportedElementError(f"{where}: molecule {i}: unsupported element(s) with atomic number {bad_z}; "
                                          f"QM9 models know {list(ELEMENTS)}")
        bad_q = sorted(set(m.charges.tolist()) - set(CHARGES))
        if bad_q:
            raise ValueError(f"{where}: molecule {i}: formal charge(s) {bad_q} outside the vocabulary {list(CHARGES)}")
        if len(m.bonds) and not np.isin(m.bonds[:, 2], BOND_ORDERS[1:]).all():
            raise ValueError(f"{where}: molecule {i}: bond orders must be 1, 2 or 3")


#: the atom class of a fake atom (FlowMol3), after the elements' classes
FAKE = len(ELEMENTS)


def fake_counts(sizes: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Fake atoms per molecule: uniform on ``0 .. floor(fraction * n)`` for a molecule of ``n`` atoms."""
    return rng.integers(0, np.floor(fraction * np.asarray(sizes)).astype(np.int64) + 1)


def padded_size_distribution(support: np.ndarray, probs: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The distribution of ``n + k`` (real atoms plus :func:`fake_counts`) for ``n`` from ``(support, probs)``."""
    out: dict[int, float] = {}
    for n, p in zip(support, probs):
        kmax = int(np.floor(fraction * n))
        for k in range(kmax + 1):
            out[int(n) + k] = out.get(int(n) + k, 0.0) + float(p) / (kmax + 1)
    sizes = np.array(sorted(out), dtype=np.int64)
    return sizes, np.array([out[int(n)] for n in sizes])


def batch_from_molecules(mols: list[GraphMolecule], fake: np.ndarray | None = None,
                         rng: np.random.Generator | None = None, fake_spread: float = 1.0) -> GraphBatch:
    """A :class:`GraphBatch` from molecules (positions centred); unknown elements or charges raise.

    ``fake[i]`` fake atoms (class :data:`FAKE`, charge 0, no bonds) are appended to molecule ``i``, each at a random
    real atom of it plus Gaussian noise of ``fake_spread`` Å (drawn from ``rng``), before centring."""
    check_vocabulary(mols)
    table = np.full(256, -1, dtype=np.int64)
    table[list(ELEMENTS)] = np.arange(len(ELEMENTS))
    fake = np.zeros(len(mols), np.int64) if fake is None else np.asarray(fake, np.int64)
    sizes = np.array([m.num_atoms for m in mols], dtype=np.int64) + fake
    z, q, pos, bonds = [], [], [], []
    for m, k in zip(mols, fake):
        p = m.positions
        if k:
            p = np.concatenate([p, p[rng.integers(m.num_atoms, size=k)] + rng.normal(0.0, fake_spread, (k, 3))])
        z.append(np.concatenate([table[m.atomic_numbers], np.full(k, FAKE)]))
        q.append(np.concatenate([m.charges + 1, np.ones(k, np.int64)]))
        pos.append(p - p.mean(0))
        adj = np.pad(m.adjacency(), (0, int(k)))
        bonds.append(adj[tuple(_triu(m.num_atoms + int(k)))])
    pos = np.concatenate(pos) if pos else np.zeros((0, 3))
    if not np.isfinite(pos).all():
        raise ValueError("non-finite atom positions")
    pair_index, pair_graph = pair_layout(sizes)
    bond_tok = np.concatenate(bonds) if bonds else np.zeros(0, np.int64)
    if not np.isin(bond_tok, BOND_ORDERS).all():
        raise ValueError(f"bond orders outside {list(BOND_ORDERS)}")
    return GraphBatch(torch.from_numpy(pos).float(), torch.from_numpy(np.concatenate(z).astype(np.int64)),
                      torch.from_numpy(np.concatenate(q).astype(np.int64)), torch.from_numpy(bond_tok),
                      torch.from_numpy(np.repeat(np.arange(len(mols)), sizes)), torch.from_numpy(pair_index),
                      torch.from_numpy(pair_graph), len(mols), int(sizes.max()))


def scaffold_known(scaffold: GraphMolecule, layout: GraphBatch, sizes: np.ndarray, *, align: bool = False,
                   prior_std: float = 1.0, iterations: int = 3, generator: torch.Generator | None = None) -> MixedKnown:
    """The scaffold as the given part of every molecule of a sampling layout: its atoms are each molecule's first
    ``k`` atoms (positions, element and charge tokens) and the pairs among them carry its bonds (``none`` where
    it has none)."""
    k = scaffold.num_atoms
    ref = batch_from_molecules([scaffold])  # tokens of the scaffold, positions centred
    dev = layout.batch.device
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    slot = np.concatenate([np.arange(n) for n in sizes])  # atom number within its molecule
    atom_given = torch.from_numpy(slot < k).to(dev)
    src = torch.from_numpy(np.minimum(slot, k - 1)).to(dev)
    pos = torch.as_tensor(scaffold.positions, dtype=torch.float32, device=dev)[src]
    x = torch.where(atom_given[:, None], pos, torch.zeros_like(pos))
    atoms = torch.where(atom_given, ref.atoms.to(dev)[src], 0)
    charges = torch.where(atom_given, ref.charges.to(dev)[src], 0)
    pi = layout.pair_index.cpu().numpy()
    local = pi - starts[layout.pair_graph.cpu().numpy()]
    pair_given = (local[0] < k) & (local[1] < k)
    adjacency = scaffold.adjacency()
    bond_tok = np.where(pair_given, adjacency[np.minimum(local[0], k - 1), np.minimum(local[1], k - 1)], 0)
    source = None
    if align:  # the scaffold's source points coupled to it as in training (Hungarian + Kabsch per molecule)
        rows = atom_given.nonzero().squeeze(1)
        block = x[rows] - x[rows].mean(0, keepdim=True)  # the scaffold, centred (the same in every molecule)
        draw = torch.randn(block.shape, generator=generator, device=dev) * prior_std
        kb = layout.batch[rows]
        draw = remove_com(draw, kb, layout.num_graphs)
        source = torch.zeros_like(x)
        source[rows] = align_source_per_graph(block, draw, kb, layout.num_graphs, iterations=iterations).to(x)
    return MixedKnown(x, atom_given[:, None],
                      {"atoms": atoms, "charges": charges, "bonds": torch.from_numpy(bond_tok).to(dev)},
                      {"atoms": atom_given, "charges": atom_given, "bonds": torch.from_numpy(pair_given).to(dev)}, source)


class QM9FlowTask(QM9Source, Task):
    name = "qm9_flow"
    config_class = QM9FlowConfig
    sample_formats = (".sdf",)
    relax_methods = ("mmff", "uff")

    def __init__(self, cfg: QM9FlowConfig):
        super().__init__(cfg)
        cfg.check()
        self.path = cfg.process.build()
        prior = cfg.flow.categorical
        self.atom_classes = len(ELEMENTS) + (cfg.flow.fake_atoms > 0)  #: the elements, and FAKE with fake atoms
        self.paths = {"atoms": CategoricalPath(self.atom_classes, prior), "charges": CategoricalPath(len(CHARGES), prior),
                      "bonds": CategoricalPath(len(BOND_ORDERS), prior)}
        self._graphs = None
        self._train_graphs = None
        self._train_rows = None
        self._size_dist = None
        self._reference = None
        self._smiles: set[str] | None = None
        self._scale: PropertyScale | None = None
        self._conditions: tuple[np.ndarray, np.ndarray] | None = None  #: (atom counts, property values) of training

    # -- data ------------------------------------------------------------------------------------------
    def graphs_for(self, rows: np.ndarray):
        """Graphs for ``rows``: the full cached table (built once, ~1.5 CPU-minutes) when it exists or many rows
        are needed, else (``data.max_train``, a few thousand test molecules) only these rows, in memory."""
        cached = self.qm9.path is not None and (self.qm9.path.parent / "qm9_graphs.npz").is_file()
        if self._graphs is None and (self.cfg.data.max_train or len(rows) <= 5000) and not cached:
            return QM9Graphs.build(self.qm9, rows, progress=False)
        if self._graphs is None:
            self._graphs = QM9Graphs.load(self.qm9)
        return self._graphs

    @property
    def train_rows(self) -> np.ndarray:
        if self._train_rows is None:
            rows = self.split_rows()
            self._train_graphs = self.graphs_for(rows)
            self._train_rows = self._train_graphs.usable(rows)
        return self._train_rows

    def molecule(self, row: int, graphs=None) -> GraphMolecule:
        if graphs is None:
            self.train_rows  # noqa: B018 -- loads the training graph table
            graphs = self._train_graphs
        m, g = self.qm9.molecule(row), graphs.graph(row)
        return GraphMolecule(m.atomic_numbers, g.charges, m.positions, g.bonds)

    def size_distribution(self) -> tuple[np.ndarray, np.ndarray]:
        """Atom counts to sample: the training histogram, with fake atoms the histogram of real plus fake atoms."""
        if self._size_dist is None:
            support, probs = super().size_distribution()
            if self.cfg.flow.fake_atoms:
                support, probs = padded_size_distribution(support, probs, self.cfg.flow.fake_atoms)
            self._size_dist = (support, probs)
        return self._size_dist

    def sampling_state(self) -> dict:
        """The vocabularies, the training atom-count histogram and, for a conditional model, the (atom count,
        property) pairs of the training molecules and the property's normalisation: all that sampling reads."""
        if self._conditions is None and self.conditional:
            rows = self.train_rows
            self._conditions = (self.qm9.num_atoms[rows].astype(np.int64), self.property_values(rows))
        support, probs = self.size_distribution()
        state = {"vocabulary": {"elements": list(ELEMENTS), "charges": list(CHARGES), "bond_orders": list(BOND_ORDERS)},
                 "size_support": torch.as_tensor(support, dtype=torch.long),
                 "size_probs": torch.as_tensor(probs, dtype=torch.float64)}
        if self.conditional:
            state["condition_sizes"] = torch.as_tensor(self._conditions[0])
            state["condition_values"] = torch.as_tensor(self._conditions[1], dtype=torch.float64)
            state["property_scale"] = {"mean": self.property_scale.mean, "mad": self.property_scale.mad}
        return state

    def load_sampling_state(self, state: dict) -> None:
        if not state:
            return  # a file written before sampling states: the dataset is read when needed
        vocab = {"elements": list(ELEMENTS), "charges": list(CHARGES), "bond_orders": list(BOND_ORDERS)}
        if dict(state["vocabulary"]) != vocab:
            raise ValueError(f"the model's vocabularies {dict(state['vocabulary'])} differ from this moldiff's {vocab}")
        self._size_dist = (state["size_support"].numpy(), state["size_probs"].numpy())
        if "condition_sizes" in state:
            self._conditions = (state["condition_sizes"].numpy(), state["condition_values"].numpy())
            self._scale = PropertyScale(float(state["property_scale"]["mean"]), float(state["property_scale"]["mad"]))

    @property
    def conditional(self) -> bool:
        return bool(self.cfg.condition.property)

    @property
    def property_scale(self) -> PropertyScale:
        """Normalisation of the conditioning property, fitted on the training rows (so a checkpoint's config
        reproduces it)."""
        if self._scale is None:
            self._scale = PropertyScale.fit(self.property_values(self.train_rows))
        return self._scale

    def property_values(self, rows: np.ndarray) -> np.ndarray:
        """The conditioning property of ``rows`` in its protocol unit."""
        return property_values(self.qm9, self.cfg.condition.property, rows)

    def condition_for(self, values) -> torch.Tensor:
        """Property values (protocol unit) -> the network's condition ``[G, 1]``."""
        return torch.as_tensor(self.property_scale.normalize(np.asarray(values, dtype=np.float64)),
                               dtype=torch.float32).reshape(-1, 1)

    def draw_conditions(self, n: int, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(sizes [n], properties [n])``: pairs of (atom count, property) of random training molecules -- the
        empirical joint distribution, as EDM samples them."""
        if self._conditions is None:
            self.sampling_state()
        sizes, values = self._conditions
        pick = torch.randint(len(sizes), (n,), generator=generator, device=generator.device).cpu().numpy()
        return sizes[pick], values[pick]

    def train_batches(self, *, start_step: int, rank: int, world_size: int, device) -> Iterator[GraphBatch]:
        rows = self.train_rows
        bs = self.cfg.train.batch_size
        if len(rows) < bs:
            raise ConfigError(f"train.batch_size={bs} exceeds the {len(rows)} training molecules (data.max_train)")
        plan = BatchPlan(self.qm9.num_atoms[rows], bs, self.cfg.seed, self.cfg.data.bucket_batches)
        f = self.cfg.flow
        step = start_step
        while True:
            picked = rows[plan.rows(step, rank, world_size)]
            if f.fake_atoms:  # the fake atoms of a step are a pure function of (seed, rank, step), as the batch is

                rng = np.random.default_rng(step_seed(self.cfg.seed, rank, step, stream=1))
                b = batch_from_molecules([self.molecule(r) for r in picked],
                                         fake_counts(self.qm9.num_atoms[picked], f.fake_atoms, rng), rng, f.fake_spread)
            else:
                b = batch_from_molecules([self.molecule(r) for r in picked])
            if self.conditional:
                b.cond = self.condition_for(self.property_values(picked))
            yield b.to(device)
            step += 1

    # -- model and loss --------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        m, p = self.cfg.model, self.paths
        extra = dict(m.options)
        if self.cfg.flow.self_condition:
            extra["self_condition"] = True
        try:
            return build_graph_backbone(
                m.backbone, self.atom_classes, len(CHARGES), len(BOND_ORDERS), atom_states=p["atoms"].num_states,
                charge_states=p["charges"].num_states, bond_states=p["bonds"].num_states, hidden=m.hidden,
                edge=m.edge, layers=m.layers, rbf=m.rbf, cutoff=m.cutoff, cond_dim=1 if self.conditional else 0, **extra)
        except ValueError as e:
            raise ConfigError(f"model.backbone: {e}") from e

    def predictor(self, model: nn.Module, batch: GraphBatch):
        """The network as a :data:`~moldiff.diffusion.mixed.MixedModel` on this batch's layout; ``prev`` (a
        self-conditioned network) is its previous :class:`MixedPrediction`, handed over as positions and class
        probabilities; ``cond`` the molecules' condition ``[G, 1]`` (a conditional model), as every sampler passes
        one."""

        def predict(state: MixedState, t: torch.Tensor, prev: MixedPrediction | None = None,
                    cond: torch.Tensor | None = None) -> MixedPrediction:
            tok = state.tokens
            sc = None
            if prev is not None:
                sc = (prev.x0, *(torch.softmax(prev.logits[k].float(), -1) for k in ("atoms", "charges", "bonds")))
            pos0, a, c, b = model(state.x, tok["atoms"], tok["charges"], tok["bonds"], t, batch.batch,
                                  batch.pair_index, batch.num_graphs, batch.max_nodes, cond=cond,
                                  **({"prev": sc} if sc is not None else {}))
            return MixedPrediction(pos0, {"atoms": a, "charges": c, "bonds": b})

        return predict

    def loss(self, model: nn.Module, batch: GraphBatch, generator: torch.Generator) -> torch.Tensor:
        f, G = self.cfg.flow, batch.num_graphs
        space = PointCloudSpace(batch.batch, G, validate=False)
        dev = batch.pos.device
        t = sample_time(self.path, G, generator=generator, device=dev, **self._time_kwargs())
        x1 = space.randn_like(batch.pos, generator) * self.path.prior_std
        if f.align:
            x1 = align_source_per_graph(batch.pos, x1, batch.batch, G, iterations=f.align_iterations)
        x_t, _ = self.path.conditional(batch.pos, x1, t, space, generator)
        if f.coord_noise:  # SemlaFlow's noise on the interpolant: the network learns to correct small errors
            x_t = x_t + f.coord_noise * space.randn_like(x_t, generator)
        tokens = {"atoms": self.paths["atoms"].corrupt(batch.atoms, t[batch.batch], generator=generator),
                  "charges": self.paths["charges"].corrupt(batch.charges, t[batch.batch], generator=generator),
                  "bonds": self.paths["bonds"].corrupt(batch.bonds, t[batch.pair_graph], generator=generator)}
        state, predict = MixedState(x_t, tokens), self.predictor(model, batch)
        prev = None
        if f.self_condition and float(torch.rand((), generator=generator, device=dev)) < 0.5:
            with torch.no_grad():  # half the batches see their own first estimate, without a gradient through it
                prev = predict(state, t, cond=batch.cond)
        pred = predict(state, t, prev, cond=batch.cond)
        counts = space.counts.float()
        pairs = (counts * (counts - 1) / 2).clamp(min=1)

        def per_graph(v: torch.Tensor, index: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
            return torch.zeros(G, device=dev).index_add_(0, index, v.float()) / norm

        l_pos = per_graph((pred.x0.float() - batch.pos).square().sum(-1), batch.batch, counts)
        l_atoms = per_graph(self.paths["atoms"].loss(pred.logits["atoms"], batch.atoms), batch.batch, counts)
        l_charges = per_graph(self.paths["charges"].loss(pred.logits["charges"], batch.charges), batch.batch, counts)
        l_bonds = per_graph(self.paths["bonds"].loss(pred.logits["bonds"], batch.bonds), batch.pair_graph, pairs)
        return f.w_pos * l_pos + f.w_atoms * l_atoms + f.w_charges * l_charges + f.w_bonds * l_bonds

    def _time_kwargs(self) -> dict:
        lc = self.cfg.loss
        return {"distribution": lc.time_distribution, "beta_a": lc.beta_a, "beta_b": lc.beta_b}

    # -- sampling --------------------------------------------------------------------------------------
    def sample(self, model, n, *, generator, sampler: SamplerConfig | None = None, progress: bool = True,
               sizes: np.ndarray | None = None, properties: np.ndarray | None = None,
               scaffold: GraphMolecule | None = None, resample: int = 1, noise: float = 0.0) -> list[GraphMolecule]:
        """``n`` molecules with atom counts drawn from the training histogram (or the given ``sizes``), in
        batches of ``eval.batch_size`` grouped by size; ``sampler.steps`` network evaluations each.

        A conditional model (``condition.property``) generates molecule ``i`` for ``properties[i]`` (protocol
        unit; give ``sizes`` too); without them, (size, property) pairs of random training molecules.

        ``scaffold``: complete a given fragment -- its atoms (elements, charges, positions) and the bonds among
        them are the first atoms of every molecule, the rest is generated (inpainting,
        :class:`~moldiff.diffusion.mixed.MixedKnown`); sizes are then drawn from the training histogram above
        the scaffold's size.  ``resample`` and ``noise``: RePaint's repeats per step and the stochasticity of
        the position steps (:func:`~moldiff.diffusion.mixed.sample_mixed_flow`; ``steps * resample`` network
        calls)."""
        steps = (sampler or self.cfg.sampler).steps
        device = next(model.parameters()).device
        if properties is not None:
            if not self.conditional:
                raise ValueError("properties given, but this model is unconditional (condition.property is empty)")
            if sizes is None:
                raise ValueError("give the atom count of every molecule (sizes) with its property")
            properties = np.asarray(properties, dtype=np.float64).reshape(-1)
            if len(properties) != n or not np.isfinite(properties).all():
                raise ValueError(f"properties must be {n} finite values")
        elif self.conditional:
            if sizes is not None:
                raise ValueError("a conditional model needs the property of every molecule with its size")
            sizes, properties = self.draw_conditions(n, generator)
        if sizes is None:
            support, probs = self.size_distribution()
            if scaffold is not None:
                probs = np.where(support > scaffold.num_atoms, probs, 0.0)
                if probs.sum() == 0:
                    raise ValueError(f"no training molecule has more than the scaffold's {scaffold.num_atoms} atoms")
                probs = probs / probs.sum()
            draw = torch.multinomial(torch.as_tensor(probs, device=device), n, replacement=True, generator=generator)
            sizes = support[draw.cpu().numpy()]
        sizes = np.asarray(sizes, dtype=np.int64)
        if len(sizes) != n:
            raise ValueError(f"sizes must list {n} atom counts, got {len(sizes)}")
        if (sizes < 1).any():
            raise ValueError("every molecule needs at least one atom")
        if scaffold is not None:
            check_vocabulary([scaffold], where="scaffold")
            if not np.isfinite(scaffold.positions).all():
                raise ValueError("scaffold: non-finite atom positions")
            if (sizes < scaffold.num_atoms).any():
                raise ValueError(f"every molecule needs at least the scaffold's {scaffold.num_atoms} atoms")
        out: list = [None] * n
        ts = flow_time_grid(steps, kind=self.cfg.flow.time_grid, device=device)
        chunks = size_groups(sizes, self.cfg.eval.batch_size)  # little padding in the dense pair layout
        for idx in progress_bar(chunks, enabled=progress and len(chunks) >= 2, desc="sampling molecules", unit="batch"):
            sz = sizes[idx]
            pair_index, pair_graph = pair_layout(sz)
            layout = GraphBatch(torch.zeros(int(sz.sum()), 3), torch.zeros(0), torch.zeros(0), torch.zeros(0),
                                torch.from_numpy(np.repeat(np.arange(len(idx)), sz)), torch.from_numpy(pair_index),
                                torch.from_numpy(pair_graph), len(idx), int(sz.max()),
                                None if properties is None else self.condition_for(properties[idx])).to(device)
            space = PointCloudSpace(layout.batch, len(idx), validate=False)
            x = space.randn_like(layout.pos, generator) * self.path.prior_std
            shapes = {"atoms": len(layout.batch), "charges": len(layout.batch), "bonds": pair_index.shape[1]}
            tokens = {k: self.paths[k].prior_sample((s,), generator=generator, device=device) for k, s in shapes.items()}
            known = None if scaffold is None else scaffold_known(
                scaffold, layout, sz, align=self.cfg.flow.align, prior_std=self.path.prior_std,
                iterations=self.cfg.flow.align_iterations, generator=generator)
            with torch.no_grad():
                final = sample_mixed_flow(self.predictor(model, layout), MixedState(x, tokens), ts, path=self.path,
                                          categorical=self.paths, space=space, eta=self.cfg.flow.eta, noise=noise,
                                          known=known, resample=resample, self_condition=self.cfg.flow.self_condition,
                                          cond=layout.cond, generator=generator,
                                          progress=progress and len(chunks) < 2)
            for k, mol in zip(idx, self.decode(final, layout, sz)):
                out[k] = mol
        return out

    def complete(self, model, scaffold, n: int, *, generator, sampler: SamplerConfig | None = None,
                 progress: bool = True, sizes: np.ndarray | None = None, resample: int = 1,
                 noise: float = 0.0) -> list[GraphMolecule]:
        """``n`` molecules that contain ``scaffold`` (a :class:`GraphMolecule`, a PyG ``Data`` with ``z``, ``pos``
        and bonds, or an RDKit ``Mol`` with a conformer): its atoms, charges, bonds and geometry are kept, the rest
        is generated (:meth:`sample` with ``scaffold``; ``sizes`` default to the training histogram above the
        scaffold's size)."""
        if hasattr(scaffold, "pos") and hasattr(scaffold, "z"):  # a PyG Data
            scaffold = GraphMolecule.from_pyg(scaffold)
        elif not isinstance(scaffold, GraphMolecule):
            scaffold = from_rdkit(scaffold)
        return self.sample(model, n, generator=generator, sampler=sampler, progress=progress, scaffold=scaffold,
                           sizes=sizes, resample=resample, noise=noise)

    @staticmethod
    def decode(state: MixedState, layout: GraphBatch, sizes: np.ndarray) -> list[GraphMolecule]:
        """Final tokens and positions -> molecules; atoms of class :data:`FAKE` are deleted with their bonds (the
        rest renumbered in order) and the positions re-centred."""
        pos = state.x.detach().double().cpu().numpy()
        atom_tok = state.tokens["atoms"].cpu().numpy()
        z = np.append(np.asarray(ELEMENTS), 0)[atom_tok]
        q = np.asarray(CHARGES)[state.tokens["charges"].cpu().numpy()]
        orders = np.asarray(BOND_ORDERS)[state.tokens["bonds"].cpu().numpy()]
        pi = layout.pair_index.cpu().numpy()
        pg = layout.pair_graph.cpu().numpy()
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        out = []
        for g, (s, n) in enumerate(zip(starts, sizes)):
            real = atom_tok[s : s + n] != FAKE
            new = np.cumsum(real) - 1  # new number of each kept atom
            sel = (pg == g) & (orders > 0)
            i, j = pi[0, sel] - s, pi[1, sel] - s
            keep = real[i] & real[j]
            bonds = np.stack([new[i[keep]], new[j[keep]], orders[sel][keep]], axis=1)
            p = pos[s : s + n][real]
            if not real.all() and len(p):
                p = p - p.mean(0)
            out.append(GraphMolecule(z[s : s + n][real], q[s : s + n][real], p, bonds))
        return out

    # -- evaluation ------------------------------------------------------------------------------------
    def training_smiles(self) -> set[str]:
        """Canonical SMILES of the training graphs (novelty reference); for the full split cached beside the
        graph table (``graph_smiles_train.txt``, keyed by the table's checksum)."""
        if self._smiles is None:
            rows = self.train_rows
            path = self._train_graphs.path
            if self.cfg.data.max_train or path is None:
                self._smiles = reference_smiles(self, rows)
            else:
                header = f"# moldiff QM9 train graph SMILES v{SMILES_VERSION} table={self._train_graphs.checksum}"
                self._smiles = cached_strings(path.parent / "graph_smiles_train.txt", header,
                                              lambda: reference_smiles(self, rows))
        return self._smiles

    def reference(self):
        """Distribution statistics of the test split's graphs (``eval.reference`` molecules; computed once)."""
        if self._reference is None:
            rows = self.qm9.split("test")
            k = self.cfg.eval.reference
            rows = rows[:k] if k else rows
            graphs = self.graphs_for(rows)
            self._reference = ReferenceStats.from_molecules([self.molecule(r, graphs) for r in graphs.usable(rows)])
        return self._reference

    def evaluate(self, model, *, generator, progress: bool = True) -> EvalResult:
        ev = self.cfg.eval
        if ev.n_samples == 0:
            return EvalResult()
        t0 = time.time()
        mols = self.sample(model, ev.n_samples, generator=generator, progress=progress)
        seconds = time.time() - t0
        res = evaluate_graphs(mols, reference=self.reference(), training_smiles=self.training_smiles() if ev.novelty else None,
                              edm=ev.edm_protocol, mmff=ev.mmff, progress=progress)
        metrics = res.flat()
        metrics["sample_seconds"] = seconds
        metrics["molecules_per_second"] = ev.n_samples / max(seconds, 1e-9)
        out = Path(tempfile.mkdtemp(prefix="moldiff-qm9flow-eval-"))
        files = {"samples": write_graph_sdf(out / "samples.sdf", mols)}
        title = (f"QM9 flow samples ({self.cfg.sampler.steps} NFE): mol. stable {res.graph['mol_stability']:.1%}, "
                 f"valid {res.graph['validity']:.1%}")
        return EvalResult(metrics=metrics, figures={"molecules": molecule_grid(mols[: ev.grid], title=title)},
                          files=files)

    def relax_samples(self, samples: list[GraphMolecule], *, method: str = "", max_iters: int = 200,
                      progress: bool = True) -> tuple[list[GraphMolecule], str]:
        """RDKit MMFF94 (UFF where MMFF lacks parameters; ``method="uff"`` the other way round), at most
        ``max_iters`` iterations; never lowers validity (:mod:`moldiff.molecules.relax`)."""
        mols, report = relax_molecules(samples, force_field=method or "mmff", max_iters=max_iters, progress=progress)
        return mols, report.summary()

    def save_samples(self, samples: list[GraphMolecule], path: Path) -> None:
        path = Path(path)
        if path.suffix.lower() != ".sdf":
            raise ValueError(f"{path}: generated graphs are written as .sdf")
        write_graph_sdf(path, samples)
