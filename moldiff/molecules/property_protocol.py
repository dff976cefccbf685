"""EDM's property-conditioned generation protocol (Hoogeboom et al. 2022, §5.2), end to end.

* A regressor (:class:`~moldiff.molecules.property_task.PropertyTask`) is trained on one half of EDM's training
  split, the conditional generator (``qm9_flow`` with ``condition.property``) on the other half.
* ``n`` (atom count, property) pairs are drawn from the generator's half -- the empirical joint distribution --
  and one molecule is generated for each; the regressor's MAE between the requested and the predicted property
  is the score (**generated**).
* Baselines on real molecules of the generator's half (the regressor never saw them): the regressor's MAE on them
  (**lower bound**), the same with the properties shuffled among the molecules (**shuffled**, EDM's upper bound),
  and a predictor that knows only the atom count (**#atoms**: the mean property of the regressor's half at that
  count).

Every MAE carries its standard error over molecules.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch

from .properties import property_spec
from .graph_metrics import graph_smiles, valence_stability

__all__ = ["PropertyProtocolResult", "property_protocol", "atom_count_predictor"]


@dataclass
class PropertyProtocolResult:
    """MAEs in the property's unit, each with its standard error (``*_se``)."""

    property: str
    unit: str
    n_generated: int
    n_reference: int
    nfe: int
    generated: float
    generated_se: float
    lower_bound: float
    lower_bound_se: float
    shuffled: float
    shuffled_se: float
    atoms_only: float
    atoms_only_se: float
    generated_valid: float  #: MAE on the generated molecules that RDKit accepts (generated graph protocol)
    validity: float  #: fraction of generated molecules RDKit accepts
    mol_stability: float  #: fraction of generated molecules whose every atom has its allowed valence
    targets: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)  #: requested values [n]
    predictions: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)  #: regressor on them [n]

    def as_dict(self) -> dict:
        """The scalar fields (JSON-ready)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("targets", "predictions")}

    def figure(self):
        """Requested against predicted property of the generated molecules (matplotlib figure)."""
        import matplotlib.pyplot as plt

        spec = property_spec(self.property)
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.scatter(self.targets, self.predictions, s=4, alpha=0.4)
        lo, hi = float(np.min(self.targets)), float(np.max(self.targets))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set(xlabel=f"requested {spec.symbol} ({self.unit})", ylabel=f"regressor on the generated molecule",
               title=f"MAE {self.generated:.3g} {self.unit} ({self.n_generated} molecules, {self.nfe} NFE)")
        fig.tight_layout()
        return fig

    def table(self) -> str:
        """A markdown table beside EDM's published figures (its Table 3)."""
        spec = property_spec(self.property)
        u = self.unit
        rows = [
            ("shuffled properties (upper bound)", self.shuffled, self.shuffled_se, spec.shuffled),
            ("#atoms only", self.atoms_only, self.atoms_only_se, spec.atoms_only),
            (f"generated ({self.n_generated} molecules, {self.nfe} NFE)", self.generated, self.generated_se, spec.edm),
            ("real molecules (lower bound)", self.lower_bound, self.lower_bound_se, spec.lower_bound),
        ]
        lines = [f"| {spec.symbol} MAE ({u}) | moldiff | EDM (published) |", "|---|---|---|"]
        lines += [f"| {name} | {v:.3g} ± {se:.2g} | {ref:g} |" for name, v, se, ref in rows]
        lines.append(f"\nGenerated: validity {self.validity:.1%}, molecule stability {self.mol_stability:.1%}; "
                     f"MAE on the valid ones {self.generated_valid:.3g} {u}.  Real molecules: {self.n_reference}.")
        return "\n".join(lines)


def _mae(err: np.ndarray) -> tuple[float, float]:
    err = np.abs(np.asarray(err, dtype=np.float64))
    if err.size == 0:
        return float("nan"), float("nan")
    return float(err.mean()), float(err.std(ddof=1) / np.sqrt(err.size)) if err.size > 1 else float("nan")


def atom_count_predictor(counts: np.ndarray, values: np.ndarray):
    """``f(counts) -> values``: the mean property of the molecules with that atom count (overall mean for a count
    never seen)."""
    counts, values = np.asarray(counts), np.asarray(values, dtype=np.float64)
    table = {int(c): float(values[counts == c].mean()) for c in np.unique(counts)}
    fallback = float(values.mean())
    return lambda query: np.array([table.get(int(c), fallback) for c in np.asarray(query)])


def property_protocol(generator_task, generator_model, regressor_task, regressor_model, *, n: int = 1000,
                      n_reference: int = 10000, steps: int | None = None, generator: torch.Generator,
                      progress: bool = True) -> PropertyProtocolResult:
    """Score a conditional QM9 generator with a property regressor (module docstring).

    Args:
        generator_task, generator_model: a ``qm9_flow`` task with ``condition.property`` set, and its network.
        regressor_task, regressor_model: a ``qm9_property`` task for the same property, and its network.
        n: molecules generated.  n_reference: real molecules of the generator's half for the baselines (0: all).
        steps: the generator's NFE (default: its config's ``sampler.steps``).
        generator: the random stream (conditions, sampling, reference subset, shuffling).
    """
    from .evaluate import rdkit_log_silenced  # lazy: RDKit loads only when molecules are read or scored

    prop = generator_task.cfg.condition.property
    if not prop:
        raise ValueError("the generator is unconditional (condition.property is empty)")
    if prop != regressor_task.cfg.property:
        raise ValueError(f"the generator is conditioned on {prop!r} but the regressor predicts "
                         f"{regressor_task.cfg.property!r}")
    halves = (generator_task.cfg.data.half, regressor_task.cfg.data.half)
    if "" in halves or halves[0] == halves[1]:
        raise ValueError(f"the protocol needs the generator and the regressor trained on different halves of the "
                         f"training split (data.half: first / second); got generator {halves[0]!r}, regressor "
                         f"{halves[1]!r}")
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    spec = property_spec(prop)
    qm9 = generator_task.qm9

    # generated molecules for (size, property) pairs of the generator's half
    sizes, targets = generator_task.draw_conditions(n, generator)
    sampler = generator_task.cfg.sampler if steps is None else replace(generator_task.cfg.sampler, steps=steps)
    mols = generator_task.sample(generator_model, n, generator=generator, sampler=sampler, progress=progress,
                                 sizes=sizes, properties=targets)
    finite = np.array([np.isfinite(m.positions).all() for m in mols])
    if not finite.all():
        raise ValueError(f"{int((~finite).sum())} generated molecules have non-finite positions")
    pred = regressor_task.predict(regressor_model, [(m.atomic_numbers, m.positions) for m in mols], progress=progress)
    with rdkit_log_silenced():
        valid = np.array([graph_smiles(m)[0] is not None for m in mols])
    stable = np.array([bool(valence_stability(m).all()) for m in mols])

    # real molecules of the generator's half
    rows = generator_task.train_rows
    if n_reference and n_reference < len(rows):
        pick = torch.randperm(len(rows), generator=generator, device=generator.device)[:n_reference].cpu().numpy()
        rows = rows[np.sort(pick)]
    truth = generator_task.property_values(rows)
    real = regressor_task.predict(regressor_model, qm9.molecules(rows), progress=progress)
    perm = torch.randperm(len(rows), generator=generator, device=generator.device).cpu().numpy()
    by_count = atom_count_predictor(qm9.num_atoms[regressor_task.train_rows],
                                    regressor_task.values(regressor_task.train_rows))

    g, g_se = _mae(pred - targets)
    lo, lo_se = _mae(real - truth)
    sh, sh_se = _mae(real - truth[perm])
    at, at_se = _mae(by_count(qm9.num_atoms[rows]) - truth)
    return PropertyProtocolResult(
        property=prop, unit=spec.unit, n_generated=n, n_reference=len(rows), nfe=sampler.steps,
        generated=g, generated_se=g_se, lower_bound=lo, lower_bound_se=lo_se, shuffled=sh, shuffled_se=sh_se,
        atoms_only=at, atoms_only_se=at_se, generated_valid=_mae((pred - targets)[valid])[0],
        validity=float(valid.mean()), mol_stability=float(stable.mean()), targets=targets, predictions=pred)
