"""Inpainting: fix part of the state and sample the rest -- one mechanism for atoms, pixels and trajectory states.

RePaint (Lugmayr et al. 2022) with the shared ancestral step: going from time ``t`` to ``s < t``, the unknown
part comes from the model's reverse step and the known part from the forward process applied to the given
values, ``x_s[known] = alpha_s x_known + sigma_s eps``; with ``resample = U > 1`` each step is repeated ``U``
times, re-noising ``x_s`` back to ``t`` (``x_t = (alpha_t / alpha_s) x_s + sqrt(sigma_t^2 - (alpha_t /
alpha_s)^2 sigma_s^2) eps``) between repeats, which lets the unknown part harmonise with the known part.  As
the steps shrink and ``U`` grows the samples approach the exact conditional ``p(x[unknown] | x[known])`` (the
test checks this against a correlated Gaussian).

``mask`` marks the known entries (``1``/``True``) and has ``x``'s shape or broadcasts to it: any subset of
coordinates, atoms (rows of a point cloud), pixels or states.  In a zero-centre-of-mass space (point clouds) the
given positions are only meaningful up to a translation: the state is re-projected after every replacement, so
the known atoms keep their relative geometry and the returned cloud is translated to put them back where they
were given (:func:`sample_repaint` with ``restore_known=True``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .denoiser import Denoiser
from .guidance import GaussianObservation
from .samplers import Callback, step_bar, ancestral_update

__all__ = ["sample_repaint", "inpainting_observation", "translate_onto_known"]


def inpainting_observation(known: Tensor, mask: Tensor, noise_std: float = 1e-3) -> GaussianObservation:
    """The known entries of states ``[B, *event]`` as Gaussian observations for the guided samplers: ``mask``
    ``[*event]`` (the same entries known in every sample), ``known [B, *event]`` or ``[*event]``; the operator
    picks ``x[:, mask]``.  A small ``noise_std`` makes the guidance a near-hard constraint."""
    mask = torch.as_tensor(mask, device=known.device).bool()
    batched = known.dim() == mask.dim() + 1
    if tuple(known.shape[int(batched):]) != tuple(mask.shape) or not bool(mask.any()):
        raise ValueError(f"mask must be [*event] (the state's shape without the batch) with some entry known, got "
                         f"{tuple(mask.shape)} for known values {tuple(known.shape)}")
    y = known[:, mask] if batched else known[mask]
    if not torch.isfinite(y).all():
        raise ValueError("the known values contain NaN or inf")
    def operator(x: Tensor) -> Tensor:
        return x[:, mask.to(x.device)]

    return GaussianObservation(y, operator, noise_std)


def _renoise(model: Denoiser, x: Tensor, s: Tensor, t: Tensor, generator) -> Tensor:
    """A draw of ``x_t`` given ``x_s`` (``t > s``) under the forward process."""
    ratio, var = model.process.transition(s, t)
    return ratio * x + torch.sqrt(var.clamp(min=0)) * model.space.randn_like(x, generator)


def sample_repaint(
    model: Denoiser,
    x: Tensor,
    ts: Tensor,
    *,
    known: Tensor,
    mask: Tensor,
    resample: int = 1,
    restore_known: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    denoise: bool = True,
    cond=None,
) -> Tensor:
    """RePaint along ``ts`` (module docstring): ``known`` holds the given values where ``mask`` is true (its other
    entries are ignored), ``x`` a prior sample of the full state, ``resample`` the repeats per step.  The
    returned state equals ``known`` on the mask (exactly, or up to the translation a zero-CoM space removes,
    which ``restore_known`` puts back).  Shapes: ``x``, ``known`` ``[*state]``; ``mask`` broadcastable to it."""
    if resample < 1:
        raise ValueError(f"resample must be >= 1, got {resample}")
    mask = torch.as_tensor(mask, device=x.device).bool().expand_as(x)
    known = torch.where(mask, known.to(x), torch.zeros_like(x))
    if not torch.isfinite(known).all():
        raise ValueError("the known values contain NaN or inf")
    space = model.space

    def paste(state: Tensor, time: Tensor) -> Tensor:
        a, sig = model.process.marginal(time)
        noisy = a * known + sig * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return space.project(torch.where(mask, noisy, state))

    x = paste(x, ts[0])
    for i in step_bar(ts, progress, "repaint"):
        t, s = ts[i], ts[i + 1]
        for u in range(resample):
            eps = model.eps(x, model.batch_time(t, x), cond)
            x = paste(ancestral_update(model, x, eps, t, s, generator), s)
            if u + 1 < resample:
                x = _renoise(model, x, s, t, generator)
        if callback is not None:
            callback({"i": i, "t": s, "x": x})
    if denoise:
        x = model.x0(x, model.batch_time(ts[-1], x), cond)
    out = torch.where(mask, known, x)
    if restore_known and getattr(space, "zero_com", False):
        out = translate_onto_known(x, known, mask, space)
    return out


def translate_onto_known(x: Tensor, known: Tensor, mask: Tensor, space) -> Tensor:
    """Point clouds ``[N, pos_dims + F]``: shift each graph so its given atoms' (rows whose positions ``mask``
    marks) mean position matches the given one (a zero-CoM sampler cannot keep absolute positions), then put the
    given values back exactly."""
    p = space.pos_dims
    rows = mask[:, :p].all(1, keepdim=True).to(x.dtype)  # [N, 1]
    shift = space.graph_sum((known[:, :p] - x[:, :p]) * rows) / space.graph_sum(rows).clamp(min=1)
    out = x.clone()
    out[:, :p] = x[:, :p] + shift[space.batch]
    return torch.where(mask, known, out)
