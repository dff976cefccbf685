"""Boltzmann sampling of particle systems (DW4, LJ13, LJ55) on the shared core.

One task, every method of the equivariant Boltzmann-generator literature (Köhler et al. 2020; Tong et al.
2023; Klein, Krämer & Noé 2023), chosen by the config alone:

=============  ==============================  ======================================
method         ``process``                     ``coupling.kind``
=============  ==============================  ======================================
I-CFM          ``flow``, constant ``sigma``    ``independent``
OT-CFM         ``flow``, constant ``sigma``    ``ot`` (exact minibatch OT, ``ot.emd``)
eq. OT-CFM     ``flow``, constant ``sigma``    ``eq_ot`` (Hungarian + Kabsch, then ``ot.emd``)
SB-CFM         ``flow``, ``noise: bridge``     ``sinkhorn`` (``reg = 2 sigma^2``, unnormalised cost)
score-SDE      ``vp`` or ``ve``                ``independent`` (denoising score matching, eps)
=============  ==============================  ======================================

State: the particles of ``B`` configurations concatenated, ``[B n, d]``, in a zero-CoM
:class:`~moldiff.diffusion.PointCloudSpace`; network: :class:`~moldiff.nn.EGNNDenoiser` (no node features;
time is its only invariant input), whose input is scaled by ``1 / sqrt(alpha^2 sigma_data^2 + sigma_t^2)``.
Flow models predict the velocity and are sampled with the shared ODE samplers; score models predict the
noise and use any shared sampler.  Data: the project's own MCMC reference sets
(:mod:`physics.particles.reference`; ``train`` for training, ``test`` for evaluation).

Evaluation (:meth:`ParticleTask.evaluate`): energy-histogram W1 / W2 and interatomic-distance-histogram
TV of ``eval.n_samples`` model samples against the test split; the test NLL through the probability-flow
ODE; the effective sample size of the samples importance-reweighted to the Boltzmann density
(``log w = -u(x) - log q(x)``, ``log q`` from the same ODE pass with the exact divergence); NFE; and the
energy / distance histograms, a few configurations, and the samples as extxyz.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from moldiff.config import (ConfigError, CouplingConfig, ExperimentConfig, ProcessConfig, SamplerConfig,
                            as_config_error, moved_to_options, raise_failed)
from moldiff.diffusion import (
    Denoiser,
    PointCloudSpace,
    denoising_loss,
    flow_matching_loss,
    log_likelihood,
    sample_with_log_likelihood,
)
from moldiff.diffusion.registry import run_sampler
from moldiff.diffusion.couplings import COUPLING_KINDS
from moldiff.diffusion.likelihood import DIVERGENCES
from moldiff.diffusion.samplers import ODE_SAMPLERS
from moldiff.diffusion.processes import FlowPath
from moldiff.training import step_seed
from moldiff.tasks import EvalResult, Task, register_task
from .energies import SYSTEM_VARIANTS, SYSTEMS
from .energies import get_system
from .reference import reference_samples
from .reference import RECIPES
from moldiff.nn.backbones import build_backbone, check_backbone_options
from .io import write_extxyz
from .metrics import importance_estimate, importance_log_weights, particle_metrics
from .refine import normalised_weights
from .reference import reference_info
from .refine import mala_refine

__all__ = ["ParticleConfig", "ParticleData", "ParticleModel", "ParticleEval", "ParticleTask"]



@dataclass
class ParticleData:
    system: str = "dw4"  #: dw4 | lj13 | lj55 | lj13_efm | lj55_efm (see physics.particles.energies)
    n_train: int = 0  #: train on the first k configurations of the train split (0: all)
    cache_dir: str | None = None  #: reference-data cache (default $MOLDIFF_CACHE/particles)
    #: full: the system's recipe in reference.py; smoke: 4,000 / 500 / 1,000 samples from short chains
    #: (seconds to build, for smoke tests -- not equilibrated enough to measure anything)
    reference: str = "full"


@moved_to_options("backbone", {"attention": "egnn", "tanh": "egnn", "coords_range": "egnn", "lmax": "e3nn",
                               "parity": "e3nn", "r_max": "e3nn", "cutoff": "e3nn"})
@dataclass
class ParticleModel:
    """The backbone (:mod:`moldiff.nn.backbones`): ``egnn`` (EDM's EGNN; Klein et al. use 3 layers x 32 for DW4 /
    LJ13, iDEM 5 x 128 for LJ13 / LJ55), ``e3nn`` (tensor products, 3D systems) or a user's ``module:Class``, with
    its own ``options`` passed through: egnn's ``attention``, ``tanh``, ``coords_range``, ...; e3nn's ``lmax``,
    ``parity``, ``r_max`` (range of the radial basis, data units), ``cutoff`` (message radius; none or 0: fully
    connected), ..."""

    backbone: str = "egnn"  #: egnn | e3nn | package.module:Class
    hidden: int = 64  #: egnn: hidden width; e3nn: channels per irrep order
    layers: int = 4
    options: dict[str, Any] = field(default_factory=dict)  #: the backbone's own keyword arguments
    prediction: str = "velocity"  #: velocity (flow processes) | eps (score-SDE processes)
    input_scaling: bool = True  #: feed x / sqrt(alpha^2 sigma_data^2 + sigma_t^2) to the network


@dataclass
class ParticleEval:
    n_samples: int = 1000  #: model samples for the histograms and the ESS (the ESS wants >= 1000)
    batch_size: int = 1000  #: configurations per sampling / likelihood batch
    n_reference: int = 10_000  #: test-split configurations the histograms are compared with
    nll_points: int = 1000  #: test configurations for the NLL (0: skip)
    ess: bool = True  #: importance weights: log q of every sample (ODE pass with the exact divergence)
    bootstrap: int = 1000  #: bootstrap resamples for the error bars of the ESS and log Z
    #: exact | exact_vmap | hutchinson, for the NLL (the ESS pass is exact: exact_vmap if chosen here, else exact)
    divergence: str = "exact"
    mala_steps: int = 0  #: > 0: also refine the samples by this many MALA steps each (asymptotically exact samples)
    mala_step_size: float = 0.0  #: 0: the median step size the system's reference chains adapted to
    likelihood_method: str = "heun"  #: euler | heun | rk45: ODE for the NLL and the ESS pass
    likelihood_steps: int = 100  #: fixed-step methods
    bins: int = 100  #: histogram bins (distance TV)
    grid: int = 8  #: configurations drawn in the picture


def _flow_process() -> ProcessConfig:
    return ProcessConfig(kind="flow", sigma=0.0, noise="constant", prior_std=1.0)


def _ode_sampler() -> SamplerConfig:
    return SamplerConfig(name="ode_heun", steps=50, denoise=False)


@dataclass
class ParticleConfig(ExperimentConfig):
    task: str = "particles"
    process: ProcessConfig = field(default_factory=_flow_process)
    sampler: SamplerConfig = field(default_factory=_ode_sampler)
    data: ParticleData = field(default_factory=ParticleData)
    coupling: CouplingConfig = field(default_factory=CouplingConfig)
    model: ParticleModel = field(default_factory=ParticleModel)
    eval: ParticleEval = field(default_factory=ParticleEval)

    def check(self) -> None:
        systems = sorted({**SYSTEMS, **SYSTEM_VARIANTS})
        flow = self.process.kind == "flow"
        checks = [
            (self.data.system in systems, "data.system", f"unknown system {self.data.system!r}; choose one of {systems}"),
            (self.data.n_train >= 0, "data.n_train", "must be >= 0 (0: the whole train split)"),
            (self.data.reference in ("full", "smoke"), "data.reference", "full | smoke"),
            (self.coupling.kind in COUPLING_KINDS, "coupling.kind", f"unknown coupling {self.coupling.kind!r}; choose one of {COUPLING_KINDS}"),
            (flow or self.coupling.kind == "independent", "coupling.kind",
             f"{self.coupling.kind!r} pairs data with noise for flow matching; score-SDE processes "
             f"({self.process.kind}) need 'independent'"),
            (self.model.prediction in ("velocity", "eps", "x0", "score"), "model.prediction", "velocity | eps | x0 | score"),
            (flow == (self.model.prediction == "velocity"), "model.prediction",
             "flow processes predict 'velocity'; score-SDE processes predict eps, x0 or score"),
            (not flow or self.sampler.name in ODE_SAMPLERS, "sampler.name",
             f"flow-matching models are sampled with an ODE sampler ({', '.join(ODE_SAMPLERS)}), not {self.sampler.name!r}"),
            (self.model.hidden >= 1, "model.hidden", "must be >= 1"),
            (self.model.layers >= 1, "model.layers", "must be >= 1"),
            (self.precond.kind == "none" or not self.model.input_scaling, "model.input_scaling",
             "precond.kind: edm scales the network's input itself (c_in); set model.input_scaling: false"),
            (self.eval.n_samples >= 0 and self.eval.nll_points >= 0, "eval.n_samples", "must be >= 0"),
            (self.eval.batch_size >= 1, "eval.batch_size", "must be >= 1"),
            (self.eval.bootstrap >= 2, "eval.bootstrap", "must be >= 2"),
            (self.eval.mala_steps >= 0 and self.eval.mala_step_size >= 0, "eval.mala_steps",
             "mala_steps and mala_step_size must be >= 0"),
            (self.eval.divergence in DIVERGENCES, "eval.divergence", " | ".join(DIVERGENCES)),
            (self.eval.likelihood_method in ("euler", "heun", "rk45"), "eval.likelihood_method", "euler | heun | rk45"),
        ]
        raise_failed(checks)
        self.model.options = as_config_error(check_backbone_options, self.model.backbone, self.model.options)


@register_task
class ParticleTask(Task):
    name = "particles"
    config_class = ParticleConfig
    sample_formats = (".extxyz", ".xyz", ".npy")

    def __init__(self, cfg: ParticleConfig):
        super().__init__(cfg)
        cfg.check()

        self.system = get_system(cfg.data.system)
        self.process = cfg.process.build()
        self.is_flow = isinstance(self.process, FlowPath)
        self.coupler = cfg.coupling.build()
        self._train: Tensor | None = None
        self._sigma_data: float | None = None

    # -- data ------------------------------------------------------------------------------------------
    def reference(self, split: str, n: int | None = None, progress: bool = True) -> Tensor:
        """MCMC reference configurations ``[N, n, d]`` (float32, zero CoM) of the config's system."""
        return reference_samples(self.system.name, split, cache_dir=self.cfg.data.cache_dir, n=n, progress=progress,
                                 recipe=self._recipe())

    def _recipe(self):
        """The reference recipe: ``None`` (the system's own) or the tiny one of ``data.reference: smoke``."""
        if self.cfg.data.reference != "smoke":
            return None
        return dataclasses.replace(RECIPES[self.system.name], sizes=(4000, 500, 1000), samples_per_chain=(20, 20, 20),
                                   burn_in=1000, thin=20, trace_chains=4)

    def train_data(self) -> Tensor:
        if self._train is None:
            x = self.reference("train")
            k = self.cfg.data.n_train
            self._train = x[:k] if k else x
        return self._train

    @property
    def sigma_data(self) -> float:
        """Standard deviation of one training coordinate (the network's input scale)."""
        if self._sigma_data is None:
            self._sigma_data = float(self.train_data().double().std())
        return self._sigma_data

    def train_batches(self, *, start_step: int, rank: int, world_size: int, device) -> Iterator[Tensor]:
        data = self.train_data()
        bs = self.cfg.train.batch_size
        if len(data) < bs:
            raise ConfigError(f"train.batch_size={bs} exceeds the {len(data)} training configurations (data.n_train)")
        data = data.to(device)
        g = torch.Generator()
        step = start_step
        while True:
            g.manual_seed(step_seed(self.cfg.seed, rank, step, stream=1))
            idx = torch.randint(0, len(data), (bs,), generator=g)
            yield data[idx.to(device)]
            step += 1

    # -- model ---------------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        m = self.cfg.model
        try:
            return build_backbone(m.backbone, 0, hidden=m.hidden, layers=m.layers, pos_dims=self.system.dim,
                                  options=m.options)
        except ValueError as e:
            raise ConfigError(f"model.backbone: {e}") from e

    def space(self, num: int, device) -> PointCloudSpace:
        """The zero-CoM space of ``num`` configurations laid out as ``[num n, d]``."""
        n = self.system.n_particles
        batch = torch.arange(num, device=device).repeat_interleave(n)
        return PointCloudSpace(batch, num, pos_dims=self.system.dim, validate=False)

    def denoiser(self, model: nn.Module, num: int, device) -> Denoiser:
        space = self.space(num, device)
        n = self.system.n_particles
        scale = self.cfg.model.input_scaling
        sd2 = self.sigma_data**2 if scale else 1.0

        def net(x: Tensor, t: Tensor) -> Tensor:
            if scale:
                alpha, sigma = self.process.marginal(t)
                c_in = torch.rsqrt(alpha**2 * sd2 + sigma**2).to(x.dtype)
                x = x * space.expand(c_in, x)
            return model(x, t, space.batch, num, n)

        return Denoiser(net, self.process, kind=self.cfg.model.prediction, space=space, precond=self.cfg.precond.build())

    def loss(self, model: nn.Module, batch: Tensor, generator: torch.Generator) -> Tensor:
        B, n, d = batch.shape
        den = self.denoiser(model, B, batch.device)
        x0 = batch.reshape(B * n, d)
        if not self.is_flow:
            return denoising_loss(den, x0, generator=generator, **self.cfg.loss.kwargs())
        noise = self.process.prior_sample(x0, den.space, generator)
        if self.coupler.kind != "independent":
            data, noise = self.coupler(batch, noise.reshape(B, n, d), generator)
            x0, noise = data.reshape(B * n, d), noise.reshape(B * n, d)
        return flow_matching_loss(den.fn, x0, noise, self.process, space=den.space, generator=generator)

    # -- sampling ------------------------------------------------------------------------------------
    def _sampler(self, sampler: SamplerConfig | None) -> SamplerConfig:
        sampler = sampler or self.cfg.sampler
        if self.is_flow:
            if sampler.name not in ODE_SAMPLERS:
                raise ConfigError(f"sampler.name: flow-matching models need an ODE sampler, not {sampler.name!r}")
            sampler = dataclasses.replace(sampler, denoise=False)  # Tweedie's step has no meaning for a flow
        return sampler

    def _prior(self, num: int, space: PointCloudSpace, model: nn.Module, generator) -> Tensor:
        p = next(model.parameters())
        like = torch.zeros(num * self.system.n_particles, self.system.dim, device=p.device, dtype=p.dtype)
        return self.process.prior_sample(like, space, generator)

    def sample(self, model, n, *, generator, sampler: SamplerConfig | None = None, progress: bool = True) -> Tensor:
        """``n`` configurations ``[n, n_particles, d]`` (float32, zero CoM) in batches of ``eval.batch_size``."""
        sampler = self._sampler(sampler)
        device = next(model.parameters()).device
        out, nfe = [], 0
        for start in range(0, n, self.cfg.eval.batch_size):
            num = min(self.cfg.eval.batch_size, n - start)
            den = self.denoiser(model, num, device)
            x = self._prior(num, den.space, model, generator)
            with torch.no_grad():
                x = run_sampler(sampler.name, den, x, generator=generator, progress=progress, **sampler.arguments())
            out.append(x.reshape(num, *self.system.event_shape))
            nfe = den.nfe
        self.last_nfe = nfe
        return torch.cat(out) if out else torch.zeros(0, *self.system.event_shape, device=device)

    def sample_with_log_q(self, model, n, *, generator, method: str | None = None, steps: int | None = None,
                          progress: bool = True) -> tuple[Tensor, Tensor, int]:
        """``n`` samples from the probability-flow ODE with their model log-density ``log q`` (nats, on the
        zero-CoM subspace): ``(x [n, n_particles, d], log_q [n], nfe per batch)``.  The ODE is ``method`` /
        ``steps`` (default: ``eval.likelihood_method`` / ``eval.likelihood_steps``)."""
        ev = self.cfg.eval
        method, steps = method or ev.likelihood_method, steps or ev.likelihood_steps
        device = next(model.parameters()).device
        xs, logq, nfe = [], [], 0
        for start in range(0, n, ev.batch_size):
            num = min(ev.batch_size, n - start)
            den = self.denoiser(model, num, device)
            z = self._prior(num, den.space, model, generator)
            # exact: importance weights exponentiate log q, and exp of Hutchinson's unbiased estimate is biased
            res = sample_with_log_likelihood(den, z, divergence="exact_vmap" if ev.divergence == "exact_vmap" else "exact",
                                             method=method, steps=steps,
                                             generator=generator, progress=progress)
            xs.append(res.x.reshape(num, *self.system.event_shape))
            logq.append(res.logp)
            nfe = res.nfe
        return torch.cat(xs), torch.cat(logq), nfe

    def test_nll(self, model, x: Tensor, *, generator, progress: bool = True) -> Tensor:
        """``-log q(x)`` per configuration ``[N]`` (nats) through the probability-flow ODE."""
        ev = self.cfg.eval
        device = next(model.parameters()).device
        out = []
        for start in range(0, len(x), ev.batch_size):
            chunk = x[start : start + ev.batch_size].to(device)
            den = self.denoiser(model, len(chunk), device)
            res = log_likelihood(den, chunk.reshape(-1, self.system.dim), divergence=ev.divergence,
                                 method=ev.likelihood_method, steps=ev.likelihood_steps, generator=generator,
                                 progress=progress)
            out.append(-res.logp)
        return torch.cat(out)

    # -- evaluation ----------------------------------------------------------------------------------
    def evaluate(self, model, *, generator, progress: bool = True) -> EvalResult:
        from .plots import distance_histogram, energy_histogram, particle_grid  # lazy: matplotlib loads only for figures

        ev = self.cfg.eval
        if ev.n_samples == 0:
            return EvalResult()
        ref = self.reference("test", ev.n_reference, progress=progress)
        e_ref = self.system.energy(ref.double())
        metrics: dict[str, float] = {}
        t0 = time.time()
        log_w = None
        sampler = self._sampler(None)
        if ev.ess and self.is_flow and sampler.name != "ode_rk45":
            # one ODE pass gives the samples and their log q (the sampler's method and steps)
            x, log_q, nfe = self.sample_with_log_q(model, ev.n_samples, generator=generator,
                                                   method=sampler.name.removeprefix("ode_"), steps=sampler.steps,
                                                   progress=progress)
        else:
            x = self.sample(model, ev.n_samples, generator=generator, progress=progress)
            nfe, log_q = self.last_nfe, None
        metrics["sample_seconds"] = time.time() - t0
        if ev.ess and log_q is None:
            t1 = time.time()
            x_w, log_q, _ = self.sample_with_log_q(model, ev.n_samples, generator=generator, progress=progress)
            metrics["ess_seconds"] = time.time() - t1
        else:
            x_w = x
        e_model = self.system.energy(x.double())
        if log_q is not None:
            e_w = e_model if x_w is x else self.system.energy(x_w.double())
            log_w = importance_log_weights(-e_w / self.system.temperature, log_q)
        nll = None
        if ev.nll_points:
            t1 = time.time()
            test = self.reference("test", max(ev.nll_points, 1), progress=progress)[: ev.nll_points]
            nll = self.test_nll(model, test, generator=generator, progress=progress)
            metrics["nll_seconds"] = time.time() - t1
        if log_w is not None:
            # ESS and log Z with bootstrap error bars; with log Z the target's entropy E_p[u] + log Z: the lowest
            # NLL any model can reach (an estimate: biased low when the ESS is small)
            imp = importance_estimate(log_w, n_boot=ev.bootstrap, generator=np.random.default_rng(self.cfg.seed))
            metrics.update(imp.as_dict())
            if math.isfinite(imp.log_z):
                metrics["nll/target_entropy"] = float(e_ref.mean()) / self.system.temperature + imp.log_z
        if nll is not None:
            metrics["nll_se"] = float(nll.std() / math.sqrt(len(nll))) if len(nll) > 1 else math.nan
        # the ESS is in already (importance_estimate, with its error bar)
        pm = particle_metrics(x, e_model, ref, e_ref, logp=None if nll is None else -nll, nfe=nfe, bins=ev.bins)
        metrics.update(pm.as_dict())
        metrics["energy/mean_model"] = float(e_model[torch.isfinite(e_model)].mean()) if torch.isfinite(e_model).any() else float("nan")
        metrics["energy/mean_reference"] = float(e_ref.mean())
        label = self.method_label()
        energies, configs, weights = {label: e_model.cpu().numpy()}, {label: x.cpu().numpy()}, {}
        if log_w is not None and np.isfinite(log_w).any():  # the reweighted curves: the ESS pass's samples
            e_w_np = e_w.cpu().numpy()
            energies["reweighted"], configs["reweighted"] = e_w_np, x_w.cpu().numpy()
            weights["reweighted"] = normalised_weights(log_w).numpy()
            metrics["energy/mean_reweighted"] = float(np.sum(weights["reweighted"] * np.nan_to_num(e_w_np)))
        if ev.mala_steps:
            x_m, m = self.refine(x, ev.mala_steps, generator=generator, progress=progress)
            e_m = self.system.energy(x_m)
            pm_m = particle_metrics(x_m, e_m, ref, e_ref, bins=ev.bins)
            metrics.update({f"mala/{k}": v for k, v in pm_m.as_dict().items() if k in ("energy/w1", "energy/w2",
                                                                                          "distance/tv", "distance/w2")})
            metrics["mala/acceptance"] = m.acceptance
            metrics["mala/energy_evals_per_sample"] = m.energy_evals_per_sample
            metrics["energy/mean_mala"] = float(e_m.mean())
            energies[f"MALA {ev.mala_steps}"], configs[f"MALA {ev.mala_steps}"] = e_m.cpu().numpy(), x_m.cpu().numpy()
        figures = {
            "energy_histogram": energy_histogram(energies, e_ref.cpu().numpy(), weights=weights,
                                                 title=f"{self.system.name}: energy, {label} vs MCMC test"),
            "distance_histogram": distance_histogram(configs, ref.cpu().numpy(), weights=weights,
                                                     title=f"{self.system.name}: interatomic distances"),
            "samples": particle_grid(x[: ev.grid].cpu().numpy(), title=f"{self.system.name} samples ({label})",
                                     labels=[f"E = {float(v):.1f}" for v in e_model[: ev.grid]]),
        }
        out = Path(tempfile.mkdtemp(prefix="moldiff-particles-eval-"))
        files = {"samples": out / "samples.extxyz"}
        write_extxyz(x.cpu().numpy(), files["samples"], energies=_finite_or_nan(e_model))
        return EvalResult(metrics=metrics, figures=figures, files=files)

    def refine(self, x: Tensor, steps: int, *, generator, progress: bool = True):
        """``steps`` MALA steps on the system's Boltzmann density from each configuration of ``x [N, n, d]``
        (:func:`physics.particles.refine.mala_refine`; step size ``eval.mala_step_size`` or the reference chains'
        median): ``(x_refined [N, n, d] float32, RefinedSamples)``."""
        h = self.cfg.eval.mala_step_size or reference_info(self.system.name, "test", cache_dir=self.cfg.data.cache_dir,
                                                           recipe=self._recipe(), progress=progress)["step_size_median"]
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (), generator=generator)))
        res = mala_refine(self.system, x.detach().cpu(), steps, generator=g, step_size=h, progress=progress)
        return res.x.to(torch.float32), res

    def method_label(self) -> str:
        """A short name of the method: I-CFM, OT-CFM, eq-OT-CFM, SB-CFM, VP or VE score-SDE."""
        if not self.is_flow:
            return f"{self.cfg.process.kind.upper()} score-SDE"
        names = {"independent": "I-CFM", "ot": "OT-CFM", "eq_ot": "eq-OT-CFM", "sinkhorn": "SB-CFM",
                 "eq_sinkhorn": "eq-SB-CFM"}
        return names[self.coupler.kind]

    def save_samples(self, samples: Tensor, path: Path) -> None:
        """``.extxyz`` / ``.xyz`` (with each configuration's energy) or ``.npy`` ``[n, n_particles, d]``."""
        path = Path(path)
        x = samples.detach().cpu()
        if path.suffix.lower() in (".extxyz", ".xyz"):
            write_extxyz(x.numpy(), path, energies=_finite_or_nan(self.system.energy(x.double())))
        elif path.suffix.lower() == ".npy":
            np.save(path, x.numpy())
        else:
            raise ValueError(f"{path}: particle samples are written as .extxyz, .xyz or .npy")


def _finite_or_nan(e: Tensor) -> np.ndarray:
    e = e.detach().cpu().double().numpy()
    return np.where(np.isfinite(e), e, np.nan)
