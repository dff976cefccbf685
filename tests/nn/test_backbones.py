"""The backbone interface: every built-in backbone, built by name, honours the contract (equivariance in float64,
batched = per graph); a user's ``module:Class`` loads; bad names and arguments are clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from moldiff.nn.backbones import build_backbone
from moldiff.testing import assert_batch_consistent, assert_equivariant

pytestmark = pytest.mark.usefixtures("global_rng")

CASES = [("egnn", 2, {}), ("egnn", 3, {}), ("e3nn", 3, {"lmax": 1}), ("e3nn", 3, {"lmax": 2}),
         ("e3nn", 3, {"cutoff": 2.0}), ("e3nn", 2, {"lmax": 1}), ("e3nn", 2, {"lmax": 2, "parity": False})]


class Tiny(nn.Module):
    """A user backbone: positions move towards each graph's centre by a learned time-dependent factor."""

    def __init__(self, num_features, *, hidden, layers, pos_dims, cond_dim=0):
        super().__init__()
        self.scale = nn.Sequential(nn.Linear(1, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, x, t, batch, num_graphs, max_nodes=None, cond=None):
        from moldiff.diffusion.spaces import remove_com

        return remove_com(x, batch, num_graphs) * self.scale(t[batch, None].to(x.dtype))


@pytest.mark.parametrize("name,dim,options", CASES + [(f"{__name__}:Tiny", 3, {})])
def test_every_backbone_keeps_the_contract(name, dim, options):
    torch.manual_seed(0)
    net = build_backbone(name, 0, hidden=8, layers=2, pos_dims=dim, options=options).double().eval()
    g = torch.Generator().manual_seed(1)
    sizes = [3, 5, 4]
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
    x = torch.randn(sum(sizes), dim, generator=g, dtype=torch.float64)
    t = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    fn = lambda xx: net(xx, t, batch, 3, max(sizes))  # noqa: E731
    assert fn(x).shape == x.shape
    assert_equivariant(fn, x, batch, pos_dims=dim, generator=g, translation="invariant")

    def fn_batched(xx, bb, ng):
        return net(xx, torch.full((ng,), 0.4, dtype=xx.dtype), bb, ng, int(torch.bincount(bb).max()))

    assert_batch_consistent(fn_batched, list(torch.split(x, sizes)))


def test_bad_backbones_are_clear_errors():
    with pytest.raises(ValueError, match="unknown backbone 'gnn'"):
        build_backbone("gnn", 0, hidden=8, layers=1, pos_dims=3)
    with pytest.raises(ValueError, match="cannot be imported"):
        build_backbone("no_such_module:Net", 0, hidden=8, layers=1, pos_dims=3)
    with pytest.raises(ValueError, match="not a torch.nn.Module"):
        build_backbone("math:pi", 0, hidden=8, layers=1, pos_dims=3)
    with pytest.raises(ValueError, match="does not take these arguments"):
        build_backbone("e3nn", 0, hidden=8, layers=1, pos_dims=3, options={"lmaxx": 2})
    with pytest.raises(ValueError, match="2D or 3D"):
        build_backbone("e3nn", 0, hidden=8, layers=1, pos_dims=4)


def test_the_particles_config_names_the_backbone(tmp_path):
    import moldiff
    from moldiff.config import ConfigError

    cfg = moldiff.load_config("configs/smoke/particles_lj13_vp.yaml", ["model.backbone=e3nn", "model.hidden=4",
                                                                         "model.layers=1", "model.lmax=2"])
    net = moldiff.get_task(cfg.task)(cfg).build_model()
    assert type(net).__name__ == "E3Denoiser"
    cfg = moldiff.load_config("configs/smoke/particles_dw4_eqotcfm.yaml", ["model.backbone=e3nn"])
    assert moldiff.get_task(cfg.task)(cfg).build_model().pos_dims == 2  # planar: the plane at z = 0
    with pytest.raises(ConfigError, match="model.backbone.*cannot be imported"):  # when the config is read
        moldiff.load_config("configs/smoke/particles_lj13_vp.yaml", ["model.backbone=nope:Net"])


def test_the_qm9_config_names_the_backbone():
    import moldiff

    cfg = moldiff.load_config("configs/smoke/qm9_edm.yaml", ["model.backbone=e3nn", "model.hidden=4", "model.layers=1"])
    task = moldiff.get_task(cfg.task)(cfg)
    net = task.build_model()
    assert type(net).__name__ == "E3Denoiser" and net.num_features == task.encoding.num_features
    batch = next(task.train_batches(start_step=0, rank=0, world_size=1, device="cpu"))
    loss = task.loss(net, batch, torch.Generator().manual_seed(0))
    assert loss.shape == (batch.num_graphs,) and torch.isfinite(loss).all()
    loss.mean().backward()


def test_the_qm9_flow_config_names_the_graph_backbone():
    import moldiff
    from moldiff.config import ConfigError

    for name, cls in (("molgraph", "MolGraphNet"), ("e3nn", "E3MolGraphNet")):
        cfg = moldiff.load_config("configs/smoke/qm9_flow.yaml", [f"model.backbone={name}", "model.hidden=8",
                                                                    "model.layers=1", "data.max_train=64"])
        task = moldiff.get_task(cfg.task)(cfg)
        net = task.build_model()
        assert type(net).__name__ == cls
        batch = next(task.train_batches(start_step=0, rank=0, world_size=1, device="cpu"))
        loss = task.loss(net, batch, torch.Generator().manual_seed(0))
        assert torch.isfinite(loss).all()
    with pytest.raises(ConfigError, match="model.backbone: unknown backbone 'egnn'"):  # when the config is read
        moldiff.load_config("configs/smoke/qm9_flow.yaml", ["model.backbone=egnn"])
