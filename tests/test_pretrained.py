"""Every shipped model: in the package, at most 10 MB, EMA weights only (fp16), loadable with weights_only and
strict keys."""

import pytest
import torch

import moldiff
from moldiff.pretrained import FORMAT, PRETRAINED, pretrained_path


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_every_shipped_model_is_small_and_loads_strictly(name):
    path = pretrained_path(name)
    assert path.stat().st_size <= 10 * 2**20
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state["format"] == FORMAT and set(state) >= {"task", "config", "ema", "step"}
    assert "model" not in state and "optimizer" not in state  # EMA weights only
    assert all(v.dtype != torch.float32 for v in state["ema"].values() if v.is_floating_point())
    loaded = moldiff.pretrained(name, device="cpu")  # strict keys
    assert loaded.step == state["step"] > 0


def test_an_unknown_name_lists_the_shipped_ones():
    with pytest.raises(ValueError, match="lorenz63.*qm9|qm9"):
        pretrained_path("nope")
