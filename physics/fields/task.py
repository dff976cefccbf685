"""The trajectory task: a diffusion prior over trajectories of a dynamical system, judged by data assimilation.

Training: windows of ``2k + 1`` consecutive states from the cached training trajectories
(:mod:`physics.fields.datasets`), normalised, denoised by a :class:`~physics.fields.models.LocalScoreNet`
(an MLP for Lorenz states, a U-Net for vorticity fields) with the shared core's loss and trainer.

Evaluation = assimilation of held-out test trajectories: each is observed through the config's
:class:`~physics.assimilation.observations.ObservationOperator` with Gaussian noise, and every method in
``eval.methods`` reconstructs it from those observations alone:

* ``sda`` -- score-based data assimilation: the config's sampler (predictor-corrector with a DDIM
  predictor by default) on :class:`~moldiff.diffusion.guidance.PosteriorDenoiser`;
* ``mmps`` -- the same sampler on :class:`~moldiff.diffusion.guidance.MMPSDenoiser` (Tweedie covariance
  through vector-Jacobian products and ``eval.cg_iterations`` conjugate-gradient steps);
* ``dps`` -- diffusion posterior sampling (:func:`~moldiff.diffusion.guidance.sample_dps`);
* ``enkf`` / ``etkf`` -- the stochastic ensemble Kalman filter and the ensemble transform Kalman filter
  with the true dynamics, started from climatology (the EnKF on the Lorenz systems; the ETKF localised, the
  LETKF, with ``eval.localization``);
* ``enks`` -- the ensemble transform Kalman smoother on the same ETKF / LETKF: each analysis also updates the
  earlier states of the window, so it sees every observation, as the diffusion methods do.

Metrics per method: RMSE of the ensemble mean against the truth (all states, and the second half, where
the filters have spun up), ensemble spread and CRPS; the climatological RMSE for scale.  Figures: the
assimilated trajectory (time series / Hovmoller for Lorenz; vorticity fields, energy spectra and the
observation mask for Kolmogorov) and an animation.  The diffusion methods smooth (they see every
observation of the window); the filters only see the past.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from moldiff.config import (ConfigError, ExperimentConfig, SamplerConfig, as_config_error, moved_to_options,
                            raise_failed)
from moldiff.options import check_options
from moldiff.diffusion.registry import run_sampler
from moldiff.diffusion import (Denoiser, GaussianObservation, MMPSDenoiser, PosteriorDenoiser, denoising_loss,
                               sample_dps, time_grid)
from moldiff.training import step_seed
from moldiff.tasks import EvalResult, Task, register_task
from physics.assimilation.observations import OBSERVATION_KINDS, ObservationOperator, observe

from .datasets import DATASETS, SplitData, get_dataset, simulator, state_shape
from .models import FlatWindow, LocalScoreNet, WindowAsChannels
from moldiff.nn import UNet
from moldiff.nn import SpaceTimeTransformer
from physics.assimilation.enkf import grid_localization, run_filter
from physics.assimilation.smoothers import run_enks
from physics.assimilation.metrics import score_ensemble
from .statistics import compare_statistics, field_statistics, statistics_figure

__all__ = ["TrajectoryTask", "TrajectoryConfig", "TrajectoryData", "TrajectoryModel", "ObservationConfig",
           "AssimilationEval", "METHODS"]

METHODS = ("sda", "mmps", "dps", "enkf", "etkf", "enks")


@dataclass
class TrajectoryData:
    system: str = "lorenz63"  #: lorenz63 | lorenz96 | kolmogorov
    size: str = "full"  #: full | smoke (a few short trajectories, for CPU smoke runs)
    cache_dir: str | None = None  #: default $MOLDIFF_CACHE/fields
    n_train: int = 0  #: use the first n training trajectories (0: all)


#: the network behind each backbone name, and the arguments the task passes itself (not options)
FIELD_BACKBONES = {"mlp": (FlatWindow, ("window_numel", "time_dim")),
                   "unet": (UNet, ("in_channels", "out_channels", "time_dim")),
                   "transformer": (SpaceTimeTransformer, ("window", "channels", "height", "width", "time_dim"))}


@moved_to_options("backbone", {"width": "mlp", "depth": ("mlp", "transformer"), "channels": "unet",
                               "blocks_per_level": "unet", "patch": "transformer", "dim": "transformer",
                               "heads": "transformer"})
@dataclass
class TrajectoryModel:
    """The local score network: a window of ``2 window + 1`` states through a backbone with its own ``options``,
    passed through -- mlp (:class:`~physics.fields.models.FlatWindow`: ``width`` 256, ``depth`` 4), unet
    (:class:`~moldiff.nn.unet.UNet`: ``channels`` [32, 64, 128], ``blocks_per_level`` 2, ...) or transformer
    (:class:`~moldiff.nn.transformer.SpaceTimeTransformer`: ``patch`` 2, ``dim`` 128, ``depth`` 4, ``heads`` 4)."""

    window: int = 2  #: k: the local score sees 2k + 1 consecutive states
    backbone: str = "mlp"  #: mlp (Lorenz) | unet | transformer (fields: space-time patches)
    options: dict[str, Any] = field(default_factory=dict)  #: the backbone's own keyword arguments
    time_dim: int = 64
    prediction: str = "eps"  #: eps | x0 | score


@dataclass
class ObservationConfig:
    """``y = A(x) + noise_std * N(0, I)`` (see :class:`~physics.assimilation.observations.ObservationOperator`)."""

    kind: str = "full"  #: full | subsample | coarsen | mask
    every: int = 1  #: observe one state in `every`
    offset: int = 0  #: first observed state
    stride: int = 1  #: subsample: every stride-th variable / pixel
    factor: int = 1  #: coarsen: block size
    fraction: float = 1.0  #: mask: fraction observed
    noise_std: float = 1.0
    seed: int = 0  #: mask pattern and observation noise
    transform: str = "identity"  #: identity | arctan: elementwise map after the linear observation (nonlinear obs)

    def build(self, shape: tuple[int, ...]) -> ObservationOperator:
        try:
            return ObservationOperator(shape, kind=self.kind, every=self.every, offset=self.offset, stride=self.stride,
                                       factor=self.factor, fraction=self.fraction, seed=self.seed,
                                       transform=self.transform)
        except ValueError as e:
            raise ConfigError(f"observation: {e}") from e


@dataclass
class AssimilationEval:
    methods: list[str] = field(default_factory=lambda: ["sda", "dps", "enkf", "etkf"])
    n_trajectories: int = 8  #: test trajectories assimilated
    length: int = 128  #: states per assimilated trajectory (at most the test split's length)
    ensemble: int = 16  #: posterior samples / filter members per trajectory
    gamma: float = 0.1  #: sda: variance of the denoiser error per unit (sigma_t / alpha_t)^2
    zeta: float = 0.1  #: dps: step size (of the whitened residual norm's gradient)
    dps_steps: int = 0  #: dps: ancestral steps (0: sampler.steps)
    cg_iterations: int = 3  #: mmps: conjugate-gradient iterations of the covariance-aware likelihood
    dynamics_std: float = 0.0  #: sda / mmps: weak-constraint std of the one-step model residual (physical units; 0: off)
    dynamics_forcing: float = 0.0  #: Lorenz-96 forcing F of that model term (0: the data's; another: model error)
    inflation: float = 1.0  #: enkf / etkf / enks: multiplicative inflation of the forecast anomalies
    localization: float = 0.0  #: enkf / etkf / enks on lorenz96, etkf / enks on fields: Gaspari-Cohn radius in grid points (0: none)
    batch_size: int = 0  #: posterior samples drawn at once (0: all)
    animation: bool = True  #: write an animated GIF of the first assimilated trajectory
    prior_samples: int = 0  #: fields: unconditional trajectories sampled and compared with the test split (0: none)


@dataclass
class TrajectoryConfig(ExperimentConfig):
    task: str = "trajectory"
    data: TrajectoryData = field(default_factory=TrajectoryData)
    model: TrajectoryModel = field(default_factory=TrajectoryModel)
    observation: ObservationConfig = field(default_factory=ObservationConfig)
    eval: AssimilationEval = field(default_factory=AssimilationEval)
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(
        name="pc", steps=256, options={"predictor": "ddim", "snr": 0.1, "corrector_steps": 1}))
    resume_mutable: ClassVar[tuple[str, ...]] = (*ExperimentConfig.resume_mutable, "observation")

    def check(self) -> None:
        m, ev, ob = self.model, self.eval, self.observation
        lorenz = self.data.system in ("lorenz63", "lorenz96")
        raise_failed([
            (self.data.system in DATASETS, "data.system", f"unknown system {self.data.system!r}; choose one of {sorted(DATASETS)}"),
            (self.data.size in ("full", "smoke"), "data.size", "must be full or smoke"),
            (self.data.n_train >= 0, "data.n_train", "must be >= 0 (0: all)"),
            (m.window >= 0, "model.window", "must be >= 0"),
            (m.backbone in ("mlp", "unet", "transformer"), "model.backbone", "must be mlp, unet or transformer"),
            (m.backbone == "mlp" or not lorenz, "model.backbone", "Lorenz states are vectors: use mlp"),
            (m.backbone != "mlp" or lorenz, "model.backbone", "fields need the unet or transformer backbone"),
            (ev.prior_samples >= 0 and (ev.prior_samples == 0 or not lorenz), "eval.prior_samples",
             "must be >= 0; the prior statistics are for fields"),
            (m.prediction in ("eps", "x0", "score"), "model.prediction", "must be eps, x0 or score"),
            (self.process.kind != "flow", "process.kind", "the trajectory prior is a score-SDE (vp, subvp, ve or ddpm)"),
            (ob.kind in OBSERVATION_KINDS, "observation.kind", f"must be one of {OBSERVATION_KINDS}"),
            (ob.noise_std > 0, "observation.noise_std", "must be > 0"),
            (all(x in METHODS for x in ev.methods), "eval.methods", f"choose from {METHODS}"),
            (lorenz or "enkf" not in ev.methods, "eval.methods",
             "the stochastic EnKF runs on the Lorenz systems; fields take etkf or enks (localised with eval.localization)"),
            (ev.n_trajectories >= 0 and ev.ensemble >= 2, "eval.ensemble", "needs n_trajectories >= 0 and ensemble >= 2"),
            (ev.length >= 2 * m.window + 1, "eval.length", f"must be at least 2 * model.window + 1 = {2 * m.window + 1}"),
            (ev.gamma >= 0 and ev.zeta >= 0 and ev.inflation >= 1.0, "eval.gamma", "needs gamma >= 0, zeta >= 0, inflation >= 1"),
            (ev.localization >= 0, "eval.localization", "must be >= 0"),
            (ev.cg_iterations >= 1, "eval.cg_iterations", "must be >= 1"),
            (ev.dynamics_std >= 0 and (ev.dynamics_std == 0 or lorenz), "eval.dynamics_std",
             "must be >= 0; the weak-constraint dynamics term is for the Lorenz systems"),
            (ev.dynamics_forcing >= 0 and (ev.dynamics_forcing == 0 or self.data.system == "lorenz96"),
             "eval.dynamics_forcing", "must be >= 0, and set only for lorenz96"),
            (ob.transform == "identity" or not {"enkf"} & set(ev.methods), "eval.methods",
             "the stochastic EnKF takes linear observations only; use etkf with observation.transform"),
        ])
        if m.backbone in FIELD_BACKBONES:
            cls, passed = FIELD_BACKBONES[m.backbone]
            m.options = as_config_error(check_options, cls, m.options, "model.options", exclude=passed,
                                        owner=f"backbone {m.backbone!r}")
        self.observation.build(state_shape(get_dataset(self.data.system, self.data.size)))


@register_task
class TrajectoryTask(SplitData, Task):
    name = "trajectory"
    config_class = TrajectoryConfig
    sample_formats = (".npy", ".npz")

    def __init__(self, cfg: TrajectoryConfig):
        super().__init__(cfg)
        cfg.check()
        self.process = cfg.process.build()
        self.spec = get_dataset(cfg.data.system, cfg.data.size)
        self.shape = state_shape(self.spec)  # physical states, what is observed
        self.operator = cfg.observation.build(self.shape)
        self._train_dev: Tensor | None = None

    # -- data (trajectories, stats, normalize, denormalize: SplitData) ---------------------------------
    def train_batches(self, *, start_step: int, rank: int, world_size: int, device) -> Iterator[Tensor]:
        """Random windows of ``2k + 1`` states, normalised: ``[batch, 2k + 1, *S]``."""
        if self._train_dev is None or self._train_dev.device != torch.device(device):
            self._train_dev = self.normalize(self.trajectories("train")).to(device)
        data = self._train_dev
        n, length = data.shape[:2]
        w = 2 * self.cfg.model.window + 1
        if length < w:
            raise ConfigError(f"model.window: windows of {w} states do not fit trajectories of {length}")
        g = torch.Generator()
        span = torch.arange(w)
        step = start_step
        while True:
            g.manual_seed(step_seed(self.cfg.seed, rank, step, stream=1))
            traj = torch.randint(0, n, (self.cfg.train.batch_size,), generator=g)
            start = torch.randint(0, length - w + 1, (self.cfg.train.batch_size,), generator=g)
            idx_t = (start[:, None] + span[None]).to(data.device)
            yield data[traj.to(data.device)[:, None], idx_t]
            step += 1

    # -- model ---------------------------------------------------------------------------------------
    @property
    def model_shape(self) -> tuple[int, ...]:
        """The shape of one state as the prior sees it: the physical state here, a latent grid in
        :class:`~physics.fields.latent.LatentTrajectoryTask`."""
        return self.shape

    def build_model(self) -> nn.Module:
        m, shape = self.cfg.model, self.model_shape
        w, kw = 2 * m.window + 1, m.options  # UNet takes channels as any sequence
        try:
            if m.backbone == "mlp":
                backbone = FlatWindow(w * int(np.prod(shape)), time_dim=m.time_dim, **kw)
            elif m.backbone == "unet":
                c = w * int(np.prod(shape[:-2]))
                backbone = UNet(c, c, time_dim=m.time_dim, **kw)
                if len(shape) > 2:  # states with channels (latent grids): [w, C, h, w'] stacked as w C channels
                    backbone = WindowAsChannels(backbone)
            else:
                channels, (height, width) = int(np.prod(shape[:-2])), shape[-2:]
                backbone = SpaceTimeTransformer(w, channels, height, width, time_dim=m.time_dim, **kw)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model.options: {e}") from e
        return LocalScoreNet(backbone, m.window)

    def denoiser(self, model: nn.Module) -> Denoiser:
        return Denoiser(model, self.process, kind=self.cfg.model.prediction, precond=self.cfg.precond.build())

    def loss(self, model: nn.Module, batch: Tensor, generator: torch.Generator) -> Tensor:
        return denoising_loss(self.denoiser(model), batch, generator=generator, **self.cfg.loss.kwargs())

    # -- sampling ------------------------------------------------------------------------------------
    def _prior(self, n: int, length: int, device, generator) -> Tensor:
        like = torch.zeros(n, length, *self.model_shape, device=device)
        return self.process.prior_sample(like, generator=generator)

    def sample(self, model, n, *, generator, sampler: SamplerConfig | None = None, progress=True,
               length: int | None = None) -> Tensor:
        """``n`` unconditional trajectories ``[n, length, *S]`` (physical units; default ``eval.length``)."""
        device = next(model.parameters()).device
        x = self._prior(n, length or self.cfg.eval.length, device, generator)
        with torch.no_grad():
            scfg = sampler or self.cfg.sampler
            z = run_sampler(scfg.name, self.denoiser(model), x, generator=generator, progress=progress, **scfg.arguments())
        return self.denormalize(z)

    def dynamics_model(self):
        """The simulator of the weak-constraint model term (``eval.dynamics_forcing``: a wrong Lorenz-96 forcing)."""
        f = self.cfg.eval.dynamics_forcing
        return simulator(self.spec, forcing=f) if f > 0 else simulator(self.spec)

    def observation_model(self, y: Tensor, length: int | None = None) -> GaussianObservation:
        """The Gaussian likelihood of observations ``y [B, P]`` as a function of *normalised* trajectories.

        Observations and noise are divided by the data's typical scale ``s`` (the mean per-variable std), so
        that SDA's ``gamma (sigma_t / alpha_t)^2`` -- an error variance in normalised units -- compares with the
        observation noise in the same units (the likelihood itself is unchanged).

        With ``eval.dynamics_std > 0`` (Lorenz systems; needs ``length``) the known dynamics join as a weak
        constraint, as in weak-constraint 4D-Var: the one-step residuals ``x_{k+1} - M(x_k)`` of the trajectory
        are extra observations of value 0 with that std (states are clamped to 6 data stds before the model step,
        so that the early, wild denoised estimates cannot overflow the integrator)."""
        s = float(self.stats[1].mean())
        std = self.cfg.observation.noise_std / s
        observe = lambda z: self.operator(self.denormalize(z)) / s  # noqa: E731
        q = self.cfg.eval.dynamics_std
        if q <= 0:
            return GaussianObservation(y / s, observe, std)
        if length is None:
            raise ValueError("the weak-constraint dynamics term needs the trajectory length")
        sim, dt = self.dynamics_model(), self.spec.interval

        def observe_with_dynamics(z: Tensor) -> Tensor:
            x = self.denormalize(z.clamp(-6.0, 6.0))
            residual = (x[:, 1:] - sim.advance(x[:, :-1], dt)).flatten(1) / s
            return torch.cat([observe(z), residual], 1)

        zeros = torch.zeros(len(y), (length - 1) * int(np.prod(self.shape)), dtype=y.dtype, device=y.device)
        noise = torch.cat([torch.full((y.shape[1],), std), torch.full((zeros.shape[1],), q / s)])
        return GaussianObservation(torch.cat([y / s, zeros], 1), observe_with_dynamics, noise.to(y.device))

    def assimilate(self, model, y: Tensor, *, n: int, length: int, method: str = "sda", generator: torch.Generator,
                   progress: bool = True) -> Tensor:
        """Posterior trajectories given observations ``y [B, P]`` of ``B`` trajectories of ``length`` states:
        ``[B, n, length, *S]`` in physical units.  ``method``: sda | mmps | dps."""
        if method not in ("sda", "mmps", "dps"):
            raise ValueError(f"assimilate: method must be sda, mmps or dps (the filters are run by evaluate), got "
                             f"{method!r}")
        expected = self.operator.num_observations(length)
        if y.dim() != 2 or y.shape[1] != expected:
            p = self.operator.per_state
            if y.dim() != 2:
                theirs = f"they are {y.dim()}-dimensional"
            elif y.shape[1] % p == 0:
                theirs = f"they hold {y.shape[1] // p} observed states of {p} values"
            else:
                theirs = f"{y.shape[1]} is no multiple of {p}: observations of another grid or operator"
            raise ValueError(f"observations of shape {list(y.shape)} do not fit this prior: it observes "
                             f"{self.operator.describe(length)}; {theirs}")
        if not torch.isfinite(y).all():
            raise ValueError("observations contain NaN or inf")
        self.check_observation_scale(y, length)
        device = next(model.parameters()).device
        ev = self.cfg.eval
        rows = y.to(device).repeat_interleave(n, 0)  # [B * n, P]
        chunk = ev.batch_size or len(rows)
        out = []
        prior = self.denoiser(model)
        for s in range(0, len(rows), chunk):
            yb = rows[s : s + chunk]
            x = self._prior(len(yb), length, device, generator)
            obs = self.observation_model(yb, length)
            if method in ("sda", "mmps"):
                guided = (PosteriorDenoiser(prior, obs, gamma=ev.gamma) if method == "sda"
                          else MMPSDenoiser(prior, obs, cg_iterations=ev.cg_iterations))
                z = run_sampler(self.cfg.sampler.name, guided, x, generator=generator, progress=progress,
                                **self.cfg.sampler.arguments())
            else:
                steps = ev.dps_steps or self.cfg.sampler.steps
                z = sample_dps(prior, x, time_grid(self.process, steps, device=device), observation=obs, zeta=ev.zeta,
                               generator=generator, progress=progress)
            out.append(self.denormalize(z.detach()))
        return torch.cat(out).reshape(len(y), n, length, *self.shape)

    #: observations farther than this many standard deviations of the data from its mean: an error (a warning
    #: beyond the second)
    OBSERVATION_SCALE_LIMITS = (100.0, 10.0)

    def check_observation_scale(self, y: Tensor, length: int) -> float:
        """How far (in standard deviations of the training data, as this operator observes them, plus the
        observation noise) the farthest observation lies from the observed mean state; ``ValueError`` beyond
        :data:`OBSERVATION_SCALE_LIMITS` [0] (a prior cannot reach it: wrong units?), a warning beyond [1]."""
        import warnings

        mean, std = self.stats
        ref = mean.to(y.dtype).expand(1, length, *self.shape)
        center = self.operator(ref)
        spread = (self.operator(ref + std.to(y.dtype)) - self.operator(ref - std.to(y.dtype))).abs() / 2
        spread = spread + self.cfg.observation.noise_std
        z = float(((y - center) / spread).abs().max())
        error, warn = self.OBSERVATION_SCALE_LIMITS
        if z > warn:
            lo, hi = float((center - 3 * spread).min()), float((center + 3 * spread).max())
            msg = (f"observations range over [{float(y.min()):.3g}, {float(y.max()):.3g}], up to {z:.3g} standard "
                   f"deviations of the training data from its mean (its observed values lie within about "
                   f"[{lo:.3g}, {hi:.3g}])")
            if z > error:
                raise ValueError(msg + ": the prior cannot reach them; check their units and the observation operator")
            warnings.warn(msg + ": the posterior will be far from anything the prior has seen", stacklevel=3)
        return z

    def observe(self, truth: Tensor, generator: torch.Generator) -> Tensor:
        """Noisy observations ``[B, P]`` of physical trajectories ``[B, L, *S]``."""
        return observe(truth, self.operator, self.cfg.observation.noise_std, generator)

    # -- evaluation ----------------------------------------------------------------------------------
    def run_filter(self, y: Tensor, length: int, method: str, generator: torch.Generator, *,
                   progress: bool = False) -> Tensor:
        """An ensemble filter or smoother (``enkf`` | ``etkf`` | ``enks``, the true dynamics) on each observed
        trajectory ``y [B, P]``,
        all as one batch, from ``eval.ensemble`` random training states (climatology): the analysis
        ensembles ``[B, M, length, *S]``.  With ``eval.localization > 0`` the filter is localised with a
        Gaspari-Cohn taper of that radius in grid points: on the Lorenz-96 ring, or on the periodic grid of a field
        (the LETKF, R-localisation; :func:`~physics.assimilation.enkf.grid_localization`)."""
        ev = self.cfg.eval
        sim = simulator(self.spec)
        train = self.trajectories("train").reshape(-1, *self.shape)
        pick = torch.randint(0, len(train), (len(y), ev.ensemble), generator=generator)
        ys = self.operator.split(y.double())  # [B, K, p]
        obs = {t: ys[:, i] for i, t in enumerate(self.operator.times(length))}
        loc = None
        if ev.localization > 0 and self.cfg.data.system != "lorenz63":
            loc = grid_localization(self.shape, ev.localization)
        shape = self.shape

        def advance(ens: Tensor, duration: float) -> Tensor:  # flat [..., M, D] states through the simulator
            return sim.advance(ens.reshape(*ens.shape[:-1], *shape), duration).reshape(ens.shape)

        H = self.operator.matrix(torch.float64)  # [p, D] of one state
        common = dict(interval=self.spec.interval, num_states=length, inflation=ev.inflation, localization=loc,
                      keep_ensemble=True, progress=progress, obs_fn=self.operator.obs_fn)
        ens0, std = train[pick].double().flatten(2), self.cfg.observation.noise_std
        if method == "enks":
            res = run_enks(advance, ens0, obs, H, std, **common)
        else:
            res = run_filter(advance, ens0, obs, H, std, method=method, generator=generator, **common)
        ens = res.ensemble.transpose(1, 2).float()  # [B, T, M, D] -> [B, M, T, D]
        return ens.reshape(*ens.shape[:3], *shape)

    def evaluate(self, model, *, generator, progress=True) -> EvalResult:

        ev = self.cfg.eval
        if ev.n_trajectories == 0:
            return EvalResult()
        test = self.trajectories("test", progress=progress)
        if ev.length > test.shape[1]:
            raise ConfigError(f"eval.length: the test trajectories have {test.shape[1]} states, asked for {ev.length}")
        truth = test[: ev.n_trajectories, : ev.length]
        g_obs = torch.Generator().manual_seed(self.cfg.observation.seed + 7919)
        y = self.observe(truth.double(), g_obs).float()
        metrics: dict[str, float] = {}
        ensembles: dict[str, Tensor] = {}
        for method in ev.methods:
            t0 = time.time()
            if method in ("sda", "mmps", "dps"):
                ens = self.assimilate(model, y, n=ev.ensemble, length=ev.length, method=method, generator=generator,
                                      progress=progress).cpu()  # [B, M, L, *S]
            else:
                g = torch.Generator().manual_seed(self.cfg.seed + 31)
                ens = self.run_filter(y, ev.length, method, g, progress=progress)
            metrics[f"{method}/seconds"] = time.time() - t0
            ensembles[method] = ens
            members_first = ens.transpose(0, 1)  # [M, B, L, *S]
            half = ev.length // 2
            for key, (e, tr) in {"": (members_first, truth), "_second_half": (members_first[:, :, half:], truth[:, half:])}.items():
                sc = score_ensemble(e, tr)
                metrics[f"{method}/rmse{key}"] = float(sc.rmse)
                if not key:
                    metrics[f"{method}/spread"] = float(sc.spread)
                    metrics[f"{method}/crps"] = float(sc.crps)
        mean = self.stats[0]
        metrics["climatology/rmse"] = float((truth - mean).square().mean().sqrt())
        metrics["observation/count"] = float(y.shape[1])
        from . import plots  # lazy: matplotlib loads only for figures

        figures, files = plots.assimilation_figures(self, truth, y, ensembles, metrics, animation=ev.animation)
        if ev.prior_samples:
            prior_metrics, prior_figures = self.prior_statistics(model, test[:, : ev.length], generator=generator,
                                                                 progress=progress)
            metrics.update(prior_metrics)
            figures.update(prior_figures)
        return EvalResult(metrics=metrics, figures=figures, files=files)

    def prior_statistics(self, model, data: Tensor, *, generator: torch.Generator, progress: bool = True):
        """``eval.prior_samples`` unconditional trajectories as long as ``data [N, L, H, W]`` against ``data``:
        metrics ``prior/...`` (:func:`~physics.fields.statistics.compare_statistics`) and figures (statistics, and
        two sampled trajectories under a test one)."""
        from .plots import trajectory_grid  # lazy: matplotlib loads only for figures

        ev, length = self.cfg.eval, data.shape[1]
        t0 = time.time()
        samples = torch.cat([self.sample(model, min(ev.batch_size or ev.prior_samples, ev.prior_samples - i),
                                         generator=generator, progress=progress, length=length).cpu()
                             for i in range(0, ev.prior_samples, ev.batch_size or ev.prior_samples)])
        seconds = time.time() - t0
        if not torch.isfinite(samples).all():
            raise FloatingPointError("the prior's samples are not finite")
        lags = min(10, length - 1)
        st_model, st_data = field_statistics(samples, lags), field_statistics(data, lags)
        n = min(self.shape) // 2
        metrics = {f"prior/{k}": v for k, v in compare_statistics(st_model, st_data, [1, 4, 12, n + 1]).items()}
        metrics["prior/seconds"] = seconds
        title = f"{self.cfg.data.system}: {ev.prior_samples} prior trajectories of {length} states"
        figures = {"prior_statistics": statistics_figure({"data (test)": st_data, "prior samples": st_model},
                                                         self.spec.interval, title),
                   "prior_samples": trajectory_grid({"test": data[0].numpy(), **{f"sample {i + 1}": samples[i].numpy()
                                                     for i in range(min(2, len(samples)))}}, self.spec.interval, title)}
        return metrics, figures

    def save_samples(self, samples: Tensor, path: Path) -> None:
        """``.npy`` or ``.npz`` (key ``trajectories``) ``[n, L, *S]``."""
        path = Path(path)
        arr = samples.detach().cpu().numpy()
        if path.suffix.lower() == ".npy":
            np.save(path, arr)
        elif path.suffix.lower() == ".npz":
            np.savez(path, trajectories=arr)
        else:
            raise ValueError(f"{path}: trajectories are written as .npy or .npz")
