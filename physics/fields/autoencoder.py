"""The field autoencoder task: compress every state of a field dataset (Kolmogorov vorticity) to a small latent grid.

Training: random single states of the training trajectories, normalised by the dataset's mean and std
(:func:`~physics.fields.datasets.normalization`), through a :class:`~moldiff.nn.autoencoder.FieldAutoencoder`
with :func:`~moldiff.nn.autoencoder.reconstruction_loss` (mean squared error + a log power-spectrum term), on the
shared trainer.  A latent trajectory prior (:mod:`physics.fields.latent`) is then trained on the encoded states.

Evaluation on the first ``eval.n_states`` states of the test split: reconstruction RMSE in physical units (and
over the data's std), the compression ratio, and the error of the mean radial power spectrum per wavenumber band
(``|log(P_hat / P)|``, as a relative error) -- with figures of fields, reconstructions and errors, and spectra.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from moldiff.config import ConfigError, ExperimentConfig, raise_failed
from moldiff.nn.autoencoder import FieldAutoencoder, radial_power_spectrum, reconstruction_loss
from moldiff.tasks import EvalResult, Task, register_task
from moldiff.training import step_seed

from .datasets import DATASETS, SplitData, get_dataset, state_shape
from .statistics import spectrum_band_errors
from .task import TrajectoryData

__all__ = ["AutoencoderConfig", "AutoencoderTask", "AutoencoderModel", "build_autoencoder"]


@dataclass
class AutoencoderModel:
    latent_channels: int = 4
    channels: list[int] = field(default_factory=lambda: [16, 32, 64])  #: width per level; len = halvings
    blocks: int = 1  #: residual blocks per level
    padding: str = "circular"  #: circular (periodic domain) | zeros (bounded)


@dataclass
class AutoencoderObjective:
    spectrum_weight: float = 0.1  #: weight of the log power-spectrum term of the loss


@dataclass
class AutoencoderEval:
    n_states: int = 512  #: test states scored (0: all)
    batch_size: int = 64
    bands: list[int] = field(default_factory=lambda: [1, 4, 12, 32])  #: band edges in radial wavenumber


@dataclass
class AutoencoderConfig(ExperimentConfig):
    task: str = "field_autoencoder"
    data: TrajectoryData = field(default_factory=lambda: TrajectoryData(system="kolmogorov"))
    model: AutoencoderModel = field(default_factory=AutoencoderModel)
    objective: AutoencoderObjective = field(default_factory=AutoencoderObjective)
    eval: AutoencoderEval = field(default_factory=AutoencoderEval)

    def check(self) -> None:
        m, ev = self.model, self.eval
        raise_failed([
            (self.data.system in DATASETS, "data.system", f"unknown system {self.data.system!r}; choose one of {sorted(DATASETS)}"),
            (self.data.system == "kolmogorov", "data.system", "the autoencoder is for fields (kolmogorov)"),
            (self.data.size in ("full", "smoke"), "data.size", "must be full or smoke"),
            (m.latent_channels >= 1 and len(m.channels) >= 1 and min(m.channels) >= 1 and m.blocks >= 0,
             "model.channels", "latent_channels and every entry of channels must be >= 1, blocks >= 0"),
            (all(c % 8 == 0 for c in m.channels), "model.channels", "every entry must be divisible by 8 (GroupNorm)"),
            (m.padding in ("circular", "zeros"), "model.padding", "must be circular or zeros"),
            (self.objective.spectrum_weight >= 0, "objective.spectrum_weight", "must be >= 0"),
            (ev.n_states >= 0 and ev.batch_size >= 1, "eval.n_states", "needs n_states >= 0 and batch_size >= 1"),
            (len(ev.bands) >= 2 and all(a < b for a, b in zip(ev.bands, ev.bands[1:])) and ev.bands[0] >= 0,
             "eval.bands", "must be >= 2 increasing wavenumbers"),
        ])
        n = state_shape(get_dataset(self.data.system, self.data.size))[0]
        if n % 2 ** len(m.channels):
            raise ConfigError(f"model.channels: {len(m.channels)} halvings need a grid divisible by "
                              f"{2 ** len(m.channels)}, the data's is {n}")


def build_autoencoder(m: AutoencoderModel) -> FieldAutoencoder:
    """The network of a config's ``model`` section (one field channel)."""
    return FieldAutoencoder(1, m.latent_channels, m.channels, m.blocks, padding_mode=m.padding)


@register_task
class AutoencoderTask(SplitData, Task):
    name = "field_autoencoder"
    config_class = AutoencoderConfig

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__(cfg)
        cfg.check()
        self.spec = get_dataset(cfg.data.system, cfg.data.size)
        self.shape = state_shape(self.spec)
        self._train_dev: Tensor | None = None

    def states(self, split: str, *, progress: bool = True) -> Tensor:
        """All states of a split, physical units: ``[N, H, W]``."""
        return self.trajectories(split, progress=progress).reshape(-1, *self.shape)

    def build_model(self) -> nn.Module:
        return build_autoencoder(self.cfg.model)

    def train_batches(self, *, start_step: int, rank: int, world_size: int, device) -> Iterator[Tensor]:
        """Random normalised states ``[batch, 1, H, W]``."""
        if self._train_dev is None or self._train_dev.device != torch.device(device):
            self._train_dev = self.normalize(self.states("train")).to(device)
        data, g, step = self._train_dev, torch.Generator(), start_step
        while True:
            g.manual_seed(step_seed(self.cfg.seed, rank, step, stream=1))
            yield data[torch.randint(0, len(data), (self.cfg.train.batch_size,), generator=g).to(data.device), None]
            step += 1

    def loss(self, model: nn.Module, batch: Tensor, generator: torch.Generator) -> Tensor:
        return reconstruction_loss(model(batch), batch, spectrum_weight=self.cfg.objective.spectrum_weight)

    def reconstruct(self, model: nn.Module, x: Tensor) -> Tensor:
        """Physical states ``[N, H, W]`` through the autoencoder, batched, without gradients."""
        device = next(model.parameters()).device
        out = []
        with torch.no_grad():
            for chunk in x.split(self.cfg.eval.batch_size):
                z = self.normalize(chunk.to(device))[:, None]
                out.append(self.denormalize(model(z)[:, 0]).cpu())
        return torch.cat(out)

    def evaluate(self, model, *, generator, progress=True) -> EvalResult:
        from .plots import reconstruction_figure, spectrum_comparison_figure  # lazy: matplotlib loads only for figures

        ev = self.cfg.eval
        x = self.states("test", progress=progress)
        x = x[: ev.n_states] if ev.n_states else x
        x_hat = self.reconstruct(model, x)
        if not torch.isfinite(x_hat).all():
            raise FloatingPointError("the autoencoder's reconstruction is not finite")
        std = float(self.stats[1].mean())
        rmse = float((x_hat - x).square().mean().sqrt())
        latent = model.latent_shape(*self.shape)
        p_hat, p = radial_power_spectrum(x_hat.double()), radial_power_spectrum(x.double())
        bands = spectrum_band_errors(p_hat, p, ev.bands)
        metrics = {"recon/rmse": rmse, "recon/rmse_over_std": rmse / std,
                   "recon/compression": float(np.prod(self.shape) / np.prod(latent)),
                   **{f"spectrum/log_error_k{k}": v for k, v in bands.items()}}
        figures = {"reconstructions": reconstruction_figure(x[:4].numpy(), x_hat[:4].numpy(), title=(
                       f"{self.cfg.data.system}: data, reconstruction ({latent[0]} x {latent[1]} x {latent[2]} latent), "
                       f"error; RMSE {rmse:.3f} ({rmse / std:.1%} of std)")),
                   "spectra": spectrum_comparison_figure({"data": p.mean(0).numpy(), "reconstruction": p_hat.mean(0).numpy()},
                                                          title=f"{self.cfg.data.system}: mean radial power spectrum")}
        return EvalResult(metrics=metrics, figures=figures)
