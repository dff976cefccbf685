"""EDM's preconditioning (Karras et al. 2022, table 1 and appendix B.6) for any Gaussian process.

Write the marginal ``x_t = alpha x_0 + sigma eps`` as ``x_t / alpha = x_0 + s eps`` with the noise level
``s = sigma / alpha`` (:meth:`~moldiff.diffusion.processes.Process.noise_level`).  The network ``F`` sees an input
of unit variance and predicts a target of unit variance; the denoiser is

    ``x0_hat = c_skip(s) (x_t / alpha) + c_out(s) F(c_in(s) (x_t / alpha), c_noise(s))``

    ``c_skip = sigma_data^2 / (s^2 + sigma_data^2)``, ``c_out = s sigma_data / sqrt(s^2 + sigma_data^2)``,
    ``c_in = 1 / sqrt(s^2 + sigma_data^2)``, ``c_noise = ln(s) / 4``,

with ``sigma_data`` the data's standard deviation.  Near ``t = 0`` (``s -> 0``) ``x0_hat -> x_t / alpha`` whatever
the network says: its error enters scaled by ``c_out ~ s`` instead of being amplified by ``1 / sigma`` as an
``eps`` network's is when converted to ``x0``.  EDM's loss weight ``lambda(s) = 1 / c_out(s)^2`` makes the
effective target of ``F`` unit-variance at every noise level (:func:`~moldiff.diffusion.losses.denoising_loss`
with ``weighting="edm"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["EDMPreconditioning", "PrecondCoefficients"]


@dataclass(frozen=True)
class PrecondCoefficients:
    """The four coefficients at noise levels ``s`` (each the shape of ``s``)."""

    c_in: Tensor
    c_skip: Tensor
    c_out: Tensor
    c_noise: Tensor


@dataclass(frozen=True)
class EDMPreconditioning:
    """Karras et al.'s preconditioning (module docstring); ``sigma_data`` the data's standard deviation (EDM's
    0.5 for images in [-1, 1]; for standardised data, 1)."""

    sigma_data: float = 1.0

    def __post_init__(self):
        if not (self.sigma_data > 0 and math.isfinite(self.sigma_data)):
            raise ValueError(f"sigma_data must be finite and > 0, got {self.sigma_data}")

    def coefficients(self, level: Tensor) -> PrecondCoefficients:
        """Coefficients at noise levels ``level = sigma / alpha``."""
        sd2 = self.sigma_data**2
        norm = torch.sqrt(level**2 + sd2)
        return PrecondCoefficients(c_in=1 / norm, c_skip=sd2 / (level**2 + sd2), c_out=level * self.sigma_data / norm,
                                   c_noise=torch.log(level) / 4)

    def loss_weight(self, level: Tensor) -> Tensor:
        """EDM's ``lambda(s) = 1 / c_out(s)^2`` for an ``x0`` error."""
        return (level**2 + self.sigma_data**2) / (level * self.sigma_data) ** 2
