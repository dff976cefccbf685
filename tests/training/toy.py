"""The small toy2d run the trainer tests share: the VP smoke config, tracking off, no evaluation samplers."""

from pathlib import Path

import moldiff

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke" / "toy2d_vp.yaml"
#: overrides that make a run take a second: no tracking, no evaluation samplers, a narrow network
FAST = ["tracking.enabled=false", "eval.samplers=[]", "eval.nll_points=0", "eval.n_samples=100",
        "train.log_every=5", "model.width=32"]


def toy_config(runs_root, *extra: str):
    """The smoke config with :data:`FAST` and ``extra`` overrides, writing under ``runs_root``."""
    return moldiff.load_config(SMOKE, [f"runs_root={runs_root}", *FAST, *extra])
