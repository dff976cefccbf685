"""Score-SDE and flow matching on 2D targets: the shared core's first customer.

Data: ``data.n_train`` points of the target (fixed seed) for training, an independent held-out set for
evaluation.  With ``process.kind: flow`` the model is trained by conditional flow matching from
``data.source`` -- the Gaussian prior, or another 2D target (the 8-Gaussians-to-two-moons morphing
benchmark of Tong et al. 2023) -- with the pairing given by ``coupling`` (I-CFM, OT-CFM, SB-CFM); flow
models are sampled with the ODE samplers, starting from held-out source points.  Evaluation samples with every sampler in ``eval.samplers`` and reports the Wasserstein-2
distance to the held-out set, beside the noise floor: the W2 between two independent data samples of the
same size, and the number of outliers -- samples farther than ``eval.outlier_distance`` from every held-out
point, which a W2 alone can hide.  Also the held-out negative log-likelihood through the probability-flow ODE.

With ``data.conditional`` the model learns ``p(x | angle)`` -- the condition is each point's polar angle as
``(cos, sin)`` -- with condition dropout ``loss.cond_dropout`` so that one network is also the unconditional
model, and is sampled with classifier-free guidance at the scales ``eval.guidance`` (angle error and W2 per scale).
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

from moldiff.config import ConfigError, CouplingConfig, ExperimentConfig, SamplerConfig, raise_failed
from moldiff.diffusion import (ClassifierFreeGuidance, Denoiser, FlowPath, denoising_loss, drop_condition,
                               flow_matching_loss, log_likelihood)
from moldiff.diffusion.registry import run_sampler
from moldiff.diffusion.samplers import ODE_SAMPLERS
from moldiff.metrics import count_outliers, wasserstein2
from moldiff.nn import MLPDenoiser
from moldiff.training import step_seed
from moldiff.tasks import EvalResult, Task, register_task

from .plots import scatter_grid
from .targets import TARGETS, sample_target

__all__ = ["Toy2DConfig", "Toy2DTask", "Toy2DData", "Toy2DModel", "Toy2DEval", "angle_condition", "angle_error"]


def angle_condition(x: Tensor) -> Tensor:
    """The condition of the conditional toy: each point's polar angle as ``(cos, sin)``, ``[n, 2] -> [n, 2]``."""
    return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def angle_error(x: Tensor, angle: Tensor | float) -> Tensor:
    """``|polar angle of x - angle|`` wrapped to ``[0, pi]``, per point: ``[n, 2] -> [n]`` (radians)."""
    err = torch.remainder(torch.atan2(x[:, 1], x[:, 0]) - angle + torch.pi, 2 * torch.pi) - torch.pi
    return err.abs()

ALL_SAMPLERS = ["ancestral", "euler_maruyama", "pc", "ode_euler", "ode_heun", "ode_rk45"]


@dataclass
class Toy2DData:
    target: str = "8gaussians"  #: 8gaussians | two_moons | checkerboard
    source: str = "gaussian"  #: flow matching: gaussian (the process prior) or a target name (morphing)
    n_train: int = 100_000
    seed: int = 0  #: data seed (independent of the training seed)
    conditional: bool = False  #: condition on each point's polar angle (cos, sin): p(x | angle), with CFG


@dataclass
class Toy2DModel:
    width: int = 256
    depth: int = 4
    time_dim: int = 64
    prediction: str = "eps"  #: eps | x0 | score | velocity (flow processes); x0 with precond.kind: edm
    time_scale: float = 1000.0  #: scale of the sinusoidal time embedding (about 100 for EDM's c_noise = ln(s) / 4)


@dataclass
class Toy2DEval:
    samplers: list[str] = field(default_factory=lambda: list(ALL_SAMPLERS))
    steps: int = 500  #: grid steps for the fixed-step samplers
    n_samples: int = 2000  #: model samples (and held-out points) per W2
    nll_points: int = 500  #: held-out points for the likelihood (0 disables)
    outlier_distance: float = 1.0  #: a sample farther than this from every held-out point is an outlier
    guidance: list[float] = field(default_factory=lambda: [0.0, 1.0, 3.0])  #: conditional: CFG scales evaluated


@dataclass
class Toy2DConfig(ExperimentConfig):
    task: str = "toy2d"
    data: Toy2DData = field(default_factory=Toy2DData)
    model: Toy2DModel = field(default_factory=Toy2DModel)
    eval: Toy2DEval = field(default_factory=Toy2DEval)
    coupling: CouplingConfig = field(default_factory=CouplingConfig)

    def check(self) -> None:
        flow = self.process.kind == "flow"
        sources = ["gaussian", *TARGETS]
        raise_failed([
            (self.data.target in TARGETS, "data.target", f"unknown target {self.data.target!r}; choose one of {sorted(TARGETS)}"),
            (self.data.source in sources, "data.source", f"unknown source {self.data.source!r}; choose one of {sources}"),
            (flow or self.data.source == "gaussian", "data.source", "a non-Gaussian source needs process.kind: flow"),
            (flow or self.coupling.kind == "independent", "coupling.kind", "couplings pair data with source points for flow matching (process.kind: flow)"),
            (flow == (self.model.prediction == "velocity"), "model.prediction", "flow processes predict 'velocity'; score-SDE processes eps, x0 or score"),
            (not flow or all(s in ODE_SAMPLERS for s in self.eval.samplers), "eval.samplers", f"flow models are sampled with {ODE_SAMPLERS}"),
            (not flow or self.sampler.name in ODE_SAMPLERS, "sampler.name", f"flow models are sampled with {ODE_SAMPLERS}"),
            (self.model.width >= 1, "model.width", "must be >= 1"),
            (self.model.depth >= 1, "model.depth", "must be >= 1"),
            (self.model.time_dim >= 1, "model.time_dim", "must be >= 1"),
            (self.data.n_train >= 1, "data.n_train", "must be >= 1"),
            (self.eval.n_samples >= 1 or not self.eval.samplers, "eval.n_samples",
             "must be >= 1 while eval.samplers lists samplers to evaluate (set eval.samplers: [] to skip them)"),
            (self.eval.steps >= 1 and self.eval.nll_points >= 0, "eval.steps", "needs steps >= 1 and nll_points >= 0"),
            (self.eval.outlier_distance > 0 and self.model.time_scale > 0, "eval.outlier_distance",
             "outlier_distance and model.time_scale must be > 0"),
            (all(w >= 0 for w in self.eval.guidance), "eval.guidance", "guidance scales must be >= 0"),
            (self.loss.cond_dropout == 0 or self.data.conditional, "loss.cond_dropout",
             "condition dropout is for a conditional model (data.conditional: true)"),
            (not self.data.conditional or not flow, "data.conditional", "the conditional toy is a score-SDE task"),
        ])


@register_task
class Toy2DTask(Task):
    name = "toy2d"
    config_class = Toy2DConfig
    sample_formats = (".npy", ".csv", ".png")

    def __init__(self, cfg: Toy2DConfig):
        super().__init__(cfg)
        cfg.check()
        self.process = cfg.process.build()
        self.precond = cfg.precond.build()
        self.is_flow = isinstance(self.process, FlowPath)
        self.coupler = cfg.coupling.build()
        self._train: Tensor | None = None
        self._source: Tensor | None = None

    # -- data ------------------------------------------------------------------------------------------
    def data(self, split: str, n: int) -> Tensor:
        """Deterministic draws: ``train`` (the training set), ``heldout``, ``floor_a`` / ``floor_b``; and of
        the source for morphing: ``source_train``, ``source_heldout``."""
        offsets = {"train": 0, "heldout": 1, "floor_a": 2, "floor_b": 3, "source_train": 4, "source_heldout": 5}
        g = torch.Generator().manual_seed(self.cfg.data.seed * 10 + offsets[split])
        name = self.cfg.data.source if split.startswith("source") else self.cfg.data.target
        return sample_target(name, n, g)

    def source_batch(self, like: Tensor, generator: torch.Generator) -> Tensor:
        """Source points paired with a data batch: prior draws, or training points of the source target."""
        if self.cfg.data.source == "gaussian":
            return self.process.prior_sample(like, generator=generator)
        if self._source is None or self._source.device != like.device:
            self._source = self.data("source_train", self.cfg.data.n_train).to(like.device)
        idx = torch.randint(0, len(self._source), (len(like),), generator=generator, device=like.device)
        return self._source[idx]

    def train_batches(self, *, start_step: int, rank: int, world_size: int, device) -> Iterator[Tensor]:
        if self._train is None or self._train.device != torch.device(device):
            self._train = self.data("train", self.cfg.data.n_train).to(device)
        g = torch.Generator()
        step = start_step
        while True:
            g.manual_seed(step_seed(self.cfg.seed, rank, step, stream=1))
            idx = torch.randint(0, len(self._train), (self.cfg.train.batch_size,), generator=g)
            yield self._train[idx.to(device)]
            step += 1

    # -- model and loss --------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        m = self.cfg.model
        return MLPDenoiser(2, width=m.width, depth=m.depth, time_dim=m.time_dim, time_scale=m.time_scale,
                           cond_dim=2 if self.cfg.data.conditional else 0)

    def denoiser(self, model: nn.Module) -> Denoiser:
        return Denoiser(model, self.process, kind=self.cfg.model.prediction, precond=self.precond)

    def loss(self, model: nn.Module, batch: Tensor, generator: torch.Generator) -> Tensor:
        if not self.is_flow:
            cond = None
            if self.cfg.data.conditional:
                cond = drop_condition(angle_condition(batch), self.cfg.loss.cond_dropout, generator)
            return denoising_loss(self.denoiser(model), batch, generator=generator, cond=cond, **self.cfg.loss.kwargs())
        x0, x1 = self.coupler(batch, self.source_batch(batch, generator), generator)
        return flow_matching_loss(model, x0, x1, self.process, generator=generator)

    # -- sampling and evaluation -----------------------------------------------------------------------
    def sample(self, model, n, *, generator, sampler: SamplerConfig | None = None, progress=True, cond=None,
               guidance: float = 0.0) -> Tensor:
        """``n`` samples ``[n, 2]``; a conditional model takes ``cond [n, 2]`` (:func:`angle_condition` of the
        wanted angles; None: unconditional) and a classifier-free guidance scale."""
        sampler = sampler or self.cfg.sampler
        device = next(model.parameters()).device
        den = self.denoiser(model)
        if cond is not None or guidance:
            if not self.cfg.data.conditional:
                raise ValueError("this toy2d model is unconditional (data.conditional: false)")
            den = ClassifierFreeGuidance(den, guidance)
        if self.is_flow:
            if sampler.name not in ODE_SAMPLERS:
                raise ConfigError(f"sampler.name: flow models are sampled with {ODE_SAMPLERS}, not {sampler.name!r}")
            sampler = dataclasses.replace(sampler, denoise=False)
        if self.cfg.data.source == "gaussian":
            x = self.process.prior_sample(torch.zeros(n, 2, device=device), generator=generator)
        else:  # held-out source points, drawn with the caller's generator
            pool = self.data("source_heldout", max(n, self.cfg.eval.n_samples))
            perm = torch.randperm(len(pool), generator=generator, device=generator.device)[:n].cpu()
            x = pool[perm].to(device)
        with torch.no_grad():
            out = run_sampler(sampler.name, den, x, generator=generator, progress=progress,
                              cond=None if cond is None else cond.to(device), **sampler.arguments())
        self.last_nfe = getattr(den, "model", den).nfe  # with guidance: the network's evaluations, not the wrapper's
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
            metrics[f"outliers/{name}"] = float(count_outliers(x, heldout, ev.outlier_distance))
            metrics[f"nfe/{name}"] = float(self.last_nfe)
            panels[f"{name}  W2={metrics[f'w2/{name}']:.3f}, {int(metrics[f'outliers/{name}'])} outliers"] = x
        if self.cfg.data.conditional:
            metrics.update(self._evaluate_guidance(model, heldout, generator, progress, panels))
        if ev.nll_points and self.cfg.data.source == "gaussian":
            device = next(model.parameters()).device
            pts = self.data("heldout", max(n, ev.nll_points))[: ev.nll_points].to(device)
            res = log_likelihood(self.denoiser(model), pts, divergence="exact", generator=generator)
            metrics["nll/heldout"] = float(-res.logp.mean())
        what = f"{self.cfg.data.source} -> " if self.cfg.data.source != "gaussian" else ""
        title = (f"{what}{self.cfg.data.target}, {self.cfg.process.kind} process; "
                 f"noise floor W2={metrics['w2/noise_floor']:.3f}")
        return EvalResult(metrics=metrics, figures={"samples": scatter_grid(panels, title=title)})

    def _evaluate_guidance(self, model, heldout: Tensor, generator, progress: bool, panels: dict) -> dict[str, float]:
        """Samples conditioned on the held-out points' angles at each guidance scale: the W2 of the conditional
        samples to the held-out set (at scale 0 the angles' marginal is the data's, so this is the plain W2) and
        the mean absolute angle error to the requested angle (radians)."""
        out = {}
        cond = angle_condition(heldout)
        want = torch.atan2(cond[:, 1], cond[:, 0]).cpu()
        sampler = dataclasses.replace(self.cfg.sampler, steps=self.cfg.eval.steps)
        for w in self.cfg.eval.guidance:
            x = self.sample(model, len(heldout), generator=generator, sampler=sampler, progress=progress, cond=cond,
                            guidance=w).cpu()
            out[f"angle_error/cfg_{w:g}"] = float(angle_error(x, want).mean())
            out[f"w2/cfg_{w:g}"] = wasserstein2(x, heldout)
            panels[f"conditional, CFG w={w:g}: angle error {out[f'angle_error/cfg_{w:g}']:.3f} rad"] = x
        return out

    def save_samples(self, samples: Tensor, path: Path) -> None:
        """``.npy``, ``.csv`` or ``.png`` (a scatter plot) by suffix."""
        path = Path(path)
        arr = samples.detach().cpu().numpy()
        if path.suffix.lower() == ".npy":
            np.save(path, arr)
        elif path.suffix.lower() == ".csv":
            np.savetxt(path, arr, delimiter=",", header="x,y", comments="")
        elif path.suffix.lower() == ".png":
            import matplotlib.pyplot as plt

            fig = scatter_grid({path.stem: samples})
            fig.savefig(path, dpi=120)
            plt.close(fig)
        else:
            raise ValueError(f"{path}: toy2d samples are written as .npy, .csv or .png")
