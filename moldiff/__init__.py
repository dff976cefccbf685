"""moldiff: generative diffusion and flow models for molecules and physics on one shared core.

Python API (everything the CLI does)::

    import moldiff, moldiff.molecules
    cfg = moldiff.load_config("configs/toy2d_vp.yaml", ["train.steps=2000"])
    result = moldiff.train(cfg)
    samples = moldiff.sample(result.checkpoint, 1000)
    metrics = moldiff.evaluate(result.checkpoint).metrics
    print(moldiff.molecules.evaluate_molecule_file("samples.sdf").table())   # EDM's molecule metrics
    mols = moldiff.pretrained("qm9").sample(100)                    # shipped model: molecules with bonds
    rdkit_mols = [m.to_rdkit() for m in mols]
"""

import os as _os

# Before torch starts OpenMP: waiting threads sleep instead of spinning on cores other processes need (measured in
# benchmarks/results/thread_contention.md; see moldiff.training.threads).  A policy the user set is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .api import evaluate, load_model, sample, train  # noqa: E402
from .pretrained import pretrained
from .config import ConfigError, ExperimentConfig, SamplerConfig
from .loading import load_config
from .tasks import EvalResult, Task, get_task, register_task

__version__ = "0.1.0"
__all__ = [
    "train", "sample", "pretrained", "evaluate", "load_model", "load_config",
    "ConfigError", "ExperimentConfig", "SamplerConfig", "Task", "EvalResult", "get_task", "register_task",
]

#: names that moved to a domain plugin: the core names no domain (old name -> module that holds it now)
_MOVED = {"evaluate_molecule_file": "moldiff.molecules", "evaluate_dataset": "moldiff.molecules"}


def __getattr__(name: str):
    if name in _MOVED:
        import importlib
        import warnings

        warnings.warn(f"moldiff.{name} moved to {_MOVED[name]}.{name}; the old name will go", DeprecationWarning,
                      stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'moldiff' has no attribute {name!r}")
