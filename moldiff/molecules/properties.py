"""QM9 properties for conditioning, in the units of EDM's property-conditioned benchmark (Hoogeboom et al. 2022,
§5.2), and the two halves of the training split that protocol needs.

The protocol trains a property regressor on the *first* half of EDM's training split and the conditional generator
on the *second* half, so the regressor never saw the molecules the generator learned from.  Which half a task
trains on is its config's ``data.half`` (``first`` | ``second`` | ``""`` for the whole split).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CONDITIONING_PROPERTIES", "HALVES", "PropertySpec", "property_spec", "property_values", "train_half",
           "PropertyScale"]

HARTREE_TO_MEV = 27_211.386_245_988


@dataclass(frozen=True)
class PropertySpec:
    """One conditioning property: its cache name, EDM's symbol, unit, factor from the cache's unit, and EDM's
    published MAEs (Table 3 of Hoogeboom et al. 2022): generated, #atoms baseline, lower and upper bound."""

    name: str
    symbol: str
    unit: str
    factor: float
    edm: float
    atoms_only: float
    lower_bound: float
    shuffled: float


#: EDM's six properties (its Table 3 figures in its units)
CONDITIONING_PROPERTIES: dict[str, PropertySpec] = {
    "alpha": PropertySpec("alpha", "α", "Bohr³", 1.0, 2.76, 3.86, 0.10, 9.01),
    "gap": PropertySpec("gap", "Δε", "meV", HARTREE_TO_MEV, 655.0, 866.0, 64.0, 1470.0),
    "homo": PropertySpec("homo", "ε_HOMO", "meV", HARTREE_TO_MEV, 356.0, 426.0, 39.0, 645.0),
    "lumo": PropertySpec("lumo", "ε_LUMO", "meV", HARTREE_TO_MEV, 584.0, 813.0, 36.0, 1457.0),
    "mu": PropertySpec("mu", "μ", "D", 1.0, 1.111, 1.053, 0.043, 1.616),
    "cv": PropertySpec("cv", "C_v", "cal/mol K", 1.0, 1.101, 1.971, 0.040, 6.857),
}

HALVES = ("", "first", "second")


def property_spec(name: str) -> PropertySpec:
    if name not in CONDITIONING_PROPERTIES:
        raise ValueError(f"unknown conditioning property {name!r}; choose one of {sorted(CONDITIONING_PROPERTIES)}")
    return CONDITIONING_PROPERTIES[name]


def property_values(qm9, name: str, rows: np.ndarray) -> np.ndarray:
    """``[len(rows)]`` values of property ``name`` in the protocol's unit (float64)."""
    return qm9.property(name)[np.asarray(rows, dtype=np.int64)] * property_spec(name).factor


def train_half(qm9, half: str) -> np.ndarray:
    """Rows of EDM's training split: its first or second half (in split order, as EDM's ``qm9_first_half`` /
    ``qm9_second_half``), or all of it for ``half=""``."""
    if half not in HALVES:
        raise ValueError(f"data.half must be one of {HALVES}, got {half!r}")
    rows = qm9.split("train")
    mid = len(rows) // 2
    return {"": rows, "first": rows[:mid], "second": rows[mid:]}[half]


@dataclass(frozen=True)
class PropertyScale:
    """Normalisation of a property for a network: ``(v - mean) / mad`` (EDM's mean absolute deviation)."""

    mean: float
    mad: float

    @classmethod
    def fit(cls, values: np.ndarray) -> "PropertyScale":
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0 or not np.isfinite(values).all():
            raise ValueError("property values must be finite and non-empty")
        mean = float(values.mean())
        return cls(mean, max(float(np.abs(values - mean).mean()), 1e-12))

    def normalize(self, v):
        return (v - self.mean) / self.mad

    def denormalize(self, z):
        return z * self.mad + self.mean
