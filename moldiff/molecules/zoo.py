"""What the molecule plugin ships: its configs (``moldiff/molecules/configs``) and its trained models, registered
through the ``moldiff.configs`` and ``moldiff.pretrained`` entry points (``pyproject.toml``)."""

from pathlib import Path

from ..pretrained import ShippedModel

HERE = Path(__file__).resolve().parent

#: the folder of the molecule configs (``moldiff config list``)
CONFIGS = HERE / "configs"

QM9 = ShippedModel(HERE / "weights" / "qm9_flow.pt",
                   "QM9 molecules with bonds and charges: graph flow matching, MolGraphNet (configs/qm9_flow_cpu.yaml)")
