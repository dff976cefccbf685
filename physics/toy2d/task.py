"""Score-SDE on 2D targets: the shared core's first customer.

Data: ``data.n_train`` points of the target (fixed seed) for training, an independent held-out set for
evaluation.  Evaluation samples with every sampler in ``eval.samplers`` and reports the Wasserstein-2
distance to the held-out set, beside the noise floor: the W2 between two independent data samples of the
same size.  Also the held-out negative log-likelihood through the probability-flow ODE.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from moldiff.config import ExperimentConfig, SamplerConfig
from moldiff.diffusion import Denoiser, denoising_loss, log_likelihood
from moldiff.metrics import wasserstein2
from moldiff.nn import MLPDenoiser
from moldiff.tasks import EvalResult, Task, register_task

from .plots import scatter_grid
from .targets import TARGETS, sample_target

__all__ = ["Toy2DConfig", "Toy2DTask", "Toy2DData", "Toy2DModel", "Toy2DEval"]

ALL_SAMPLERS = ["ancestral", "euler_maruyama", "pc", "ode_euler", "ode_heun", "ode_rk45"]


@dataclass
class Toy2DData:
    target: str = "8gaussians"  #: 8gaussians | two_moons | checkerboard
    n_train: int = 100_000
    seed: int = 0  #: data seed (independent of the training seed)


@dataclass
class Toy2DModel:
    width: int = 256
    depth: int = 4
    time_dim: int = 64
    prediction: str = "eps"  #: eps | x0 | score


@dataclass
class Toy2DEval:
    samplers: list[str] = field(default_factory=lambda: list(ALL_SAMPLERS))
    steps: int = 500  #: grid steps for the fixed-step samplers
    n_samples: int = 2000  #: model samples (and held-out points) per W2
    nll_points: int = 500  #: held-out points for the likelihood (0 disables)


@dataclass
class Toy2DConfig(ExperimentConfig):
    task: str = "toy2d"
    data: Toy2DData = field(default_factory=Toy2DData)
    model: Toy2DModel = field(default_factory=Toy2DModel)
    eval: Toy2DEval = field(default_factory=Toy2DEval)


@register_task
class Toy2DTask(Task):
    name = "toy2d"
    config_class = Toy2DConfig
    sample_formats = (".npy", ".csv", ".png")

    def __init__(self, cfg: Toy2DConfig):
        super().__init__(cfg)
        if cfg.data.target not in TARGETS:
            from moldiff.config import ConfigError

            raise ConfigError(f"data.target: unknown target {cfg.data.target!r}; choose one of {sorted(TARGETS)}")
        self.process = cfg.process.build()
        self._train: Tensor | None = None

    # -- data ------------------------------------------------------------------------------------------
    def data(self, split: str, n: int) -> Tensor:
        """Deterministic draws: ``train`` (the training set), ``heldout``, ``floor_a`` / ``floor_b``."""
        offsets = {"train": 0, "heldout": 1, "floor_a": 2, "floor_b": 3}
        g = torch.Generator().manual_seed(self.cfg.data.seed * 10 + offsets[split])
        return sample_target(self.cfg.data.target, n, g)

    def train_batches(self, *, start_step: int, rank: int, world_size: int, device) -> Iterator[Tensor]:
        if self._train is None or self._train.device != torch.device(device):
            self._train = self.data("train", self.cfg.data.n_train).to(device)
        g = torch.Generator()
        step = start_step
        while True:
            g.manual_seed(hash((self.cfg.seed, rank, step)) % (2**62))
            idx = torch.randint(0, len(self._train), (self.cfg.train.batch_size,), generator=g)
            yield self._train[idx.to(device)]
            step += 1

    # -- model and loss --------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        m = self.cfg.model
        return MLPDenoiser(2, width=m.width, depth=m.depth, time_dim=m.time_dim)

    def denoiser(self, model: nn.Module) -> Denoiser:
        return Denoiser(model, self.process, kind=self.cfg.model.prediction)

    def loss(self, model: nn.Module, batch: Tensor, generator: torch.Generator) -> Tensor:
        return denoising_loss(model, batch, self.process, kind=self.cfg.model.prediction, generator=generator)

    # -- sampling and evaluation -----------------------------------------------------------------------
    def sample(self, model, n, *, generator, sampler: SamplerConfig | None = None, progress=True) -> Tensor:
        sampler = sampler or self.cfg.sampler
        device = next(model.parameters()).device
        den = self.denoiser(model)
        x = self.process.prior_sample(torch.zeros(n, 2, device=device), generator=generator)
        with torch.no_grad():
            out = sampler.run(den, x, generator=generator, progress=progress)
        self.last_nfe = den.nfe
        return out

    def evaluate(self, model, *, generator, progress=True) -> EvalResult:
        ev = self.cfg.eval
        n = ev.n_samples
        heldout = self.data("heldout", n)
        metrics = {"w2/noise_floor": wasserstein2(self.data("floor_a", n), self.data("floor_b", n))}
        panels = {"data (held-out)": heldout}
        for name in ev.samplers:
            sampler = dataclasses.replace(self.cfg.sampler, name=name, steps=ev.steps)
            t0 = time.time()
            x = self.sample(model, n, generator=generator, sampler=sampler, progress=progress)
            metrics[f"sample_seconds/{name}"] = time.time() - t0
            metrics[f"w2/{name}"] = wasserstein2(x, heldout)
            metrics[f"nfe/{name}"] = float(self.last_nfe)
            panels[f"{name}  W2={metrics[f'w2/{name}']:.3f}"] = x
        if ev.nll_points:
            device = next(model.parameters()).device
            pts = self.data("heldout", max(n, ev.nll_points))[: ev.nll_points].to(device)
            res = log_likelihood(self.denoiser(model), pts, divergence="exact", generator=generator)
            metrics["nll/heldout"] = float(-res.logp.mean())
        title = (f"{self.cfg.data.target}, {self.cfg.process.kind} process; "
                 f"noise floor W2={metrics['w2/noise_floor']:.3f}")
        return EvalResult(metrics=metrics, figures={"samples": scatter_grid(panels, title=title)})

    def save_samples(self, samples: Tensor, path: Path) -> None:
        """``.npy``, ``.csv`` or ``.png`` (a scatter plot) by suffix."""
        path = Path(path)
        arr = samples.detach().cpu().numpy()
        if path.suffix == ".npy":
            np.save(path, arr)
        elif path.suffix == ".csv":
            np.savetxt(path, arr, delimiter=",", header="x,y", comments="")
        elif path.suffix == ".png":
            import matplotlib.pyplot as plt

            fig = scatter_grid({path.stem: samples})
            fig.savefig(path, dpi=120)
            plt.close(fig)
        else:
            raise ValueError(f"{path}: toy2d samples are written as .npy, .csv or .png")
