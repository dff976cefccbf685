"""Latent trajectory diffusion for fields: a spatio-temporal prior over the encodings of a trained field autoencoder,
assimilating observations through its decoder.

The autoencoder (a ``field_autoencoder`` checkpoint, :mod:`physics.fields.autoencoder`; its EMA weights, frozen)
maps every normalised state ``[H, W]`` to a latent grid ``[C, h, w]``; the latents are standardised per channel
with the mean and std of the encoded training states.  Everything else is the trajectory task
(:class:`~physics.fields.task.TrajectoryTask`) with the latent grid as the state: windows of ``2k + 1``
consecutive latent states train the local score (a :class:`~moldiff.nn.SpaceTimeTransformer` over space-time
patches by default, or a U-Net), composed for trajectories of any length, on the shared loss and trainer.

Sampling decodes: :meth:`LatentTrajectoryTask.denormalize` maps standardised latent trajectories to physical
fields.  Assimilation conditions on the pixel-space observations through the decoder, ``y = A(D(z)) + noise``
(:meth:`~moldiff.diffusion.GaussianObservation.through`), with any of the trajectory task's guidance methods (SDA,
MMPS, DPS), so the metrics, figures and observation settings are those of the pixel-space prior.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from moldiff.config import ConfigError, raise_failed
from moldiff.diffusion import GaussianObservation
from moldiff.tasks import register_task

from .task import TrajectoryConfig, TrajectoryTask
from moldiff.api import load_model
from moldiff.config import to_dict
from moldiff.pretrained import build_stored_model
from moldiff.training.checkpoint import CheckpointError
from moldiff.training.warm_start import PRETRAINED_PREFIX, resolve_source

__all__ = ["LatentSpec", "LatentTrajectoryConfig", "LatentTrajectoryTask"]


@dataclass
class LatentSpec:
    #: the autoencoder: a field_autoencoder checkpoint (EMA weights, frozen), or a latent prior's checkpoint or shipped
    #: file that carries one (``pretrained:NAME`` too); a path is made absolute when checked
    autoencoder: str = ""
    batch_size: int = 256  #: states encoded at once


@dataclass
class LatentTrajectoryConfig(TrajectoryConfig):
    task: str = "latent_trajectory"
    latent: LatentSpec = field(default_factory=LatentSpec)

    def check(self) -> None:
        """Also makes ``latent.autoencoder`` absolute, so that the checkpoint's saved config finds it from any folder."""
        super().check()
        if self.latent.autoencoder and not self.latent.autoencoder.startswith(PRETRAINED_PREFIX):
            self.latent.autoencoder = str(Path(self.latent.autoencoder).expanduser().absolute())
        raise_failed([
            (self.data.system == "kolmogorov", "data.system", "the latent prior is for fields (kolmogorov)"),
            (bool(self.latent.autoencoder), "latent.autoencoder", "give the checkpoint of a field_autoencoder run"),
            (self.latent.batch_size >= 1, "latent.batch_size", "must be >= 1"),
        ])


def _autoencoder_from_state(state: dict, source: str):
    """``(task, model)`` of the autoencoder a sampling state carries (``{"config", "weights", "sampling"}``):
    strict keys, float32, frozen."""
    kind = state["config"].get("task")
    if kind != "field_autoencoder":
        raise ConfigError(f"latent.autoencoder: {source} carries a {kind!r} model, not a field_autoencoder")
    return build_stored_model(state["config"], state.get("sampling", {}), state["weights"], source=source)


@register_task
class LatentTrajectoryTask(TrajectoryTask):
    name = "latent_trajectory"
    config_class = LatentTrajectoryConfig

    def __init__(self, cfg: LatentTrajectoryConfig):
        super().__init__(cfg)
        self._ae = None

    # -- the autoencoder -----------------------------------------------------------------------------
    def _load_autoencoder(self):
        """The frozen autoencoder: the one this task's sampling state carried (a checkpoint or shipped file made
        since issue 29), else the one ``latent.autoencoder`` names -- a field_autoencoder checkpoint, or a latent
        prior's file that carries its autoencoder."""
        if self._ae is None:
            source = self.cfg.latent.autoencoder
            try:
                path = resolve_source(source, "latent.autoencoder")
            except CheckpointError as e:
                raise ConfigError(str(e)) from None
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 -- torch raises many types for a file that is not a checkpoint
                raise ConfigError(f"latent.autoencoder: {path} is not a readable checkpoint ({type(e).__name__})") from e
            carried = (state.get("sampling") or {}).get("autoencoder") if isinstance(state, dict) else None
            if carried is not None:
                ae_task, ae = _autoencoder_from_state(carried, str(path))
            else:
                kind = (state.get("config") or {}).get("task") if isinstance(state, dict) else None
                if kind != "field_autoencoder":
                    raise ConfigError(f"latent.autoencoder: {path} is a {kind!r} checkpoint, not a field_autoencoder "
                                      "(nor a latent prior that carries one)")
                ae_task, ae = load_model(path, device="cpu")
            self._set_autoencoder(ae_task, ae, str(path))
        return self._ae

    def _set_autoencoder(self, ae_task, ae, source: str) -> None:
        if tuple(ae_task.shape) != tuple(self.shape) or ae_task.cfg.data.system != self.cfg.data.system:
            raise ConfigError(f"latent.autoencoder: {source} was trained on {ae_task.cfg.data.system} "
                              f"{tuple(ae_task.shape)}, this prior's data are {self.cfg.data.system} {tuple(self.shape)}")
        ae.eval().requires_grad_(False)
        self._ae = (ae_task, ae)

    # -- what a checkpoint carries: the autoencoder and the latent standardisation ----------------------
    def sampling_state(self) -> dict:
        """The physical normalisation, the latent standardisation and the whole autoencoder (config, weights and its
        own sampling state): a latent prior's checkpoint or shipped file loads from any folder, with no other file."""
        ae_task, ae = self._load_autoencoder()
        mean, std = self.latent_stats
        return {**super().sampling_state(),
                "latent_stats": {"mean": mean.clone(), "std": std.clone()},
                "autoencoder": {"config": to_dict(ae_task.cfg), "sampling": ae_task.sampling_state(),
                                "weights": {k: v.detach().cpu().clone() for k, v in ae.state_dict().items()}}}

    def load_sampling_state(self, state: dict) -> None:
        """Takes the carried autoencoder and latent statistics back (older checkpoints carry neither: the
        autoencoder is then read from ``latent.autoencoder``, the statistics recomputed from the training data)."""
        super().load_sampling_state(state)
        if "autoencoder" in state:
            self._set_autoencoder(*_autoencoder_from_state(state["autoencoder"], "the checkpoint"), "the checkpoint")
        if "latent_stats" in state:
            self._latent_stats = (state["latent_stats"]["mean"], state["latent_stats"]["std"])

    @property
    def autoencoder(self):
        """The frozen :class:`~moldiff.nn.FieldAutoencoder`."""
        return self._load_autoencoder()[1]

    @property
    def stats(self) -> tuple[Tensor, Tensor]:
        """The physical normalisation: the autoencoder's (so that its encoder sees what it was trained on)."""
        return self._load_autoencoder()[0].stats

    @property
    def model_shape(self) -> tuple[int, ...]:
        return tuple(self.autoencoder.latent_shape(*self.shape))

    @property
    def latent_stats(self) -> tuple[Tensor, Tensor]:
        """Per-channel mean and std ``[C, 1, 1]`` of the encoded training states."""
        if not hasattr(self, "_latent_stats"):
            z = self._encode(self.trajectories("train").reshape(-1, *self.shape))
            self._latent_stats = (z.mean((0, 2, 3))[:, None, None], z.std((0, 2, 3))[:, None, None])
        return self._latent_stats

    def _encode(self, x: Tensor) -> Tensor:
        """Physical states ``[N, H, W]`` -> raw latents ``[N, C, h, w]`` (no gradients, batched)."""
        ae_task, ae = self._load_autoencoder()
        p = next(ae.parameters())  # on the CPU, or where denormalize moved the decoder
        with torch.no_grad():
            return torch.cat([ae.encode(ae_task.normalize(chunk.to(p))[:, None]).to(x.device)
                              for chunk in x.split(self.cfg.latent.batch_size)])

    # -- the state the prior sees --------------------------------------------------------------------
    def normalize(self, x: Tensor) -> Tensor:
        """Physical trajectories ``[..., H, W]`` -> standardised latents ``[..., C, h, w]`` (no gradients)."""
        lead = x.shape[: -len(self.shape)]
        mean, std = self.latent_stats
        z = (self._encode(x.reshape(-1, *self.shape).cpu()) - mean) / std
        return z.reshape(*lead, *z.shape[1:]).to(x.device)

    def denormalize(self, z: Tensor) -> Tensor:
        """Standardised latents ``[..., C, h, w]`` -> physical fields ``[..., H, W]``: the decoder (differentiable)."""
        ae_task, ae = self._load_autoencoder()
        ae.to(z.device)
        mean, std = (s.to(z) for s in self.latent_stats)
        lead = z.shape[:-3]
        u = ae.decode(z.reshape(-1, *z.shape[-3:]) * std + mean)[:, 0]
        return ae_task.denormalize(u).reshape(*lead, *self.shape)

    def observation_model(self, y: Tensor, length: int | None = None) -> GaussianObservation:
        """The pixel-space likelihood of observations ``y [B, P]`` (the pixel prior's, scaled alike) composed with the
        decoder: a function of standardised latent trajectories, ``A(D(z))``."""
        s = float(self.stats[1].mean())
        pixel = GaussianObservation(y / s, lambda x: self.operator(x) / s, self.cfg.observation.noise_std / s)
        return pixel.through(self.denormalize)
