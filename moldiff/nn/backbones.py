"""The point-cloud backbone interface, and backbones by name: ``egnn``, ``e3nn`` or a user's ``"module:Class"``.

A backbone is an ``nn.Module`` built as ``Class(num_features, *, hidden, layers, pos_dims, cond_dim=0, **options)``
whose forward is

    ``forward(x [N, pos_dims + F], t [G], batch [N], num_graphs, max_nodes=None, cond=None) -> [N, pos_dims + F]``

* ``x``: ``G`` point clouds concatenated (PyG layout; ``batch [N]`` sorted names each node's graph): positions in
  the first ``pos_dims`` columns, ``F`` invariant node features after them.
* ``t [G]`` in ``[0, 1]``, one time per graph.  ``max_nodes``: the largest graph's size when the caller knows it
  (a dense backbone pads to it; others ignore it).  ``cond [G, C]``: an optional global condition (NaN rows: none).
* Output: a displacement per node in the position columns -- rotation-equivariant, translation-invariant, zero
  centre of mass per graph -- and ``F`` invariant features.  The task reads it as its prediction kind (eps,
  velocity, x0 ...).

Any module with this contract works: ``moldiff.testing.assert_equivariant`` checks it (the tests run it on every
backbone here), and ``examples/custom_backbone.py`` trains a 30-line user network on DW4 through
``model.backbone: "module:Class"``.

Molecular *graphs* (the ``qm9_flow`` recipe: bond tokens in, bond logits out) have the contract of
:class:`~moldiff.nn.molgraph.MolGraphNet` -- built as ``Class(num_atoms, num_charges, num_bonds, *, atom_states,
charge_states, bond_states, hidden, edge, layers, rbf, cutoff, cond_dim, **options)`` (``options``: the
backbone's own, from ``model.options``), called as
``forward(pos [N, 3], atoms [N], charges [N], bonds [P], t [G], batch [N], pair_index [2, P], num_graphs,
max_nodes, cond=None) -> (pos0, atom_logits, charge_logits, bond_logits)``; :func:`build_graph_backbone` picks
``molgraph``, ``e3nn`` or ``module:Class``.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from torch import nn

from ..options import check_options
from .egnn import EGNNDenoiser
from .molgraph import MolGraphNet

__all__ = ["BACKBONES", "GRAPH_BACKBONES", "build_backbone", "build_graph_backbone", "check_backbone_options"]


def _egnn(num_features: int, *, hidden: int, layers: int, pos_dims: int, cond_dim: int = 0, **options) -> nn.Module:
    if cond_dim:
        raise ValueError("the egnn backbone takes no condition; use e3nn or your own backbone")
    return EGNNDenoiser(num_features, hidden_nf=hidden, n_layers=layers, pos_dims=pos_dims, **options)


def _e3nn(num_features: int, *, hidden: int, layers: int, pos_dims: int, cond_dim: int = 0, **options) -> nn.Module:
    from .e3 import E3Denoiser  # lazy: e3nn loads only for its backbones

    return E3Denoiser(num_features, mul=hidden, layers=layers, pos_dims=pos_dims, cond_dim=cond_dim, **options)


#: built-in backbones by name
BACKBONES: dict[str, Callable[..., nn.Module]] = {"egnn": _egnn, "e3nn": _e3nn}


def _resolve(name: str, registry: dict[str, Callable[..., nn.Module]]) -> Callable[..., nn.Module]:
    if name in registry:
        return registry[name]
    if ":" not in name:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(registry)} or give 'module:Class'")
    module, _, attr = name.partition(":")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"backbone {name!r} cannot be imported: {e}") from e
    if not (isinstance(factory, type) and issubclass(factory, nn.Module)):
        raise ValueError(f"backbone {name!r} is not a torch.nn.Module subclass")
    return factory


def _build(name: str, factory: Callable[..., nn.Module], *args, **kwargs) -> nn.Module:
    try:
        return factory(*args, **kwargs)
    except TypeError as e:
        raise ValueError(f"backbone {name!r} does not take these arguments: {e}") from e


def build_backbone(name: str, num_features: int, *, hidden: int, layers: int, pos_dims: int, cond_dim: int = 0,
                   options: dict[str, Any] | None = None) -> nn.Module:
    """A point-cloud backbone by name (:data:`BACKBONES`) or ``"package.module:Class"``; ``options`` are its own
    keyword arguments.  Raises ``ValueError`` naming the problem (unknown name, import failure, bad arguments)."""
    return _build(name, _resolve(name, BACKBONES), num_features, hidden=hidden, layers=layers, pos_dims=pos_dims,
                  cond_dim=cond_dim, **(options or {}))


def _molgraph(*args, **kwargs) -> nn.Module:
    return MolGraphNet(*args, **kwargs)


def _e3_molgraph(*args, **kwargs) -> nn.Module:
    from .e3_molgraph import E3MolGraphNet  # lazy: e3nn loads only for its backbones

    return E3MolGraphNet(*args, **kwargs)


#: built-in molecular-graph backbones by name
GRAPH_BACKBONES: dict[str, Callable[..., nn.Module]] = {"molgraph": _molgraph, "e3nn": _e3_molgraph}


def build_graph_backbone(name: str, num_atoms: int, num_charges: int, num_bonds: int, **kwargs) -> nn.Module:
    """A molecular-graph backbone by name (:data:`GRAPH_BACKBONES`) or ``"package.module:Class"`` (module
    docstring); ``kwargs`` as :class:`~moldiff.nn.molgraph.MolGraphNet` takes them, plus the backbone's own."""
    return _build(name, _resolve(name, GRAPH_BACKBONES), num_atoms, num_charges, num_bonds, **kwargs)


#: the network class behind each built-in name, and the arguments its builder passes itself (not options)
_CLASSES = {
    ("point", "egnn"): ("moldiff.nn.egnn:EGNNDenoiser", ("num_features", "hidden_nf", "n_layers", "pos_dims")),
    ("point", "e3nn"): ("moldiff.nn.e3:E3Denoiser", ("num_features", "mul", "layers", "pos_dims", "cond_dim")),
    ("graph", "molgraph"): ("moldiff.nn.molgraph:MolGraphNet", ()),
    ("graph", "e3nn"): ("moldiff.nn.e3_molgraph:E3MolGraphNet", ()),
}
_POINT_ARGS = ("num_features", "hidden", "layers", "pos_dims", "cond_dim")
_GRAPH_ARGS = ("num_atoms", "num_charges", "num_bonds", "atom_states", "charge_states", "bond_states", "hidden", "edge",
               "layers", "rbf", "cutoff", "cond_dim", "self_condition")


def check_backbone_options(name: str, options: dict[str, Any], prefix: str = "model.options", *,
                           graph: bool = False) -> dict[str, Any]:
    """A backbone's ``options`` checked against its class (names, types, and the class's own ``check_options``),
    before anything is built; ``ValueError`` naming ``prefix.KEY``.  ``graph``: a molecular-graph backbone."""
    kind = "graph" if graph else "point"
    path, passed = _CLASSES.get((kind, name), (name, ()))
    try:
        _resolve(name, GRAPH_BACKBONES if graph else BACKBONES)  # a known name, or an importable module:Class
        cls = _resolve(path, {})  # the built-in's class, or the user's
    except ValueError as e:
        raise ValueError(f"{prefix.rsplit('.', 1)[0]}.backbone: {e}") from None
    exclude = tuple(passed) + (_GRAPH_ARGS if graph else _POINT_ARGS)
    return check_options(cls, options, prefix, exclude=exclude, owner=f"backbone {name!r}")
