"""Joint flows over a continuous block and categorical tokens (positions + atom, charge and bond types in
molecular flow matching; any state with both kinds of variables).

The continuous block follows a :class:`~moldiff.diffusion.processes.FlowPath` from the data (``t = 0``) to a
Gaussian source (``t = 1``); each token family follows its own
:class:`~moldiff.diffusion.categorical.CategoricalPath`.  One network predicts the clean state: ``x0_hat``
for the continuous block and ``p(x_0 | x_t)`` logits for every token family ("endpoint" parameterisation, as in
SemlaFlow and FlowMol).  :func:`sample_mixed_flow` integrates both backward on a shared time grid, in the
k-diffusion style of :mod:`moldiff.diffusion.samplers`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from ..progress import progress_bar

from .categorical import CategoricalPath
from .processes import FlowPath
from .spaces import Space
from .inpainting import translate_onto_known

__all__ = ["MixedState", "MixedPrediction", "MixedKnown", "sample_mixed_flow", "flow_time_grid", "TIME_GRIDS"]

#: the kinds of :func:`flow_time_grid`
TIME_GRIDS = ("uniform", "cosine", "quadratic")


@dataclass
class MixedState:
    """``x`` continuous (in a :class:`~moldiff.diffusion.spaces.Space`) and ``tokens`` by family name."""

    x: Tensor
    tokens: dict[str, Tensor]


@dataclass
class MixedPrediction:
    """The network's clean-state prediction: ``x0`` and per-family logits ``[*tokens.shape, K]``."""

    x0: Tensor
    logits: dict[str, Tensor]


#: ``model(state, t) -> prediction``; a self-conditioned model also takes ``prev``, its previous prediction (or None)
MixedModel = Callable[..., MixedPrediction]


@dataclass
class MixedKnown:
    """The given part of a mixed state, for inpainting (e.g. a scaffold: some atoms' positions and elements, the
    bonds among them).

    ``x`` ``[*x.shape]`` holds the given continuous values where ``x_mask`` (broadcastable to ``x``; for point
    clouds ``[N, 1]``: whole atoms) is true; ``tokens[name]`` the given tokens where ``token_masks[name]`` is true
    (families without a mask are generated entirely).  ``source`` (``x``'s shape) is where the path of each given
    value starts: by default an independent draw from the source, but a model trained with coupled (aligned)
    source-data pairs wants the given values' source coupled the same way.  In a zero-centre-of-mass space the given positions count
    up to a translation: the sampler keeps their relative geometry, and :meth:`restore` puts them back where they
    were given.
    """

    x: Tensor
    x_mask: Tensor
    tokens: dict[str, Tensor]
    token_masks: dict[str, Tensor]
    source: Tensor | None = None  #: the source point of each given value (default: a fresh draw of the source)

    def restore(self, state: MixedState, space: Space) -> MixedState:
        """Translate each graph so its given atoms sit where they were given (zero-CoM spaces), and put the
        given values back exactly."""
        mask = torch.as_tensor(self.x_mask, device=state.x.device).bool().expand_as(state.x)
        x = torch.where(mask, self.x.to(state.x), state.x)
        if getattr(space, "zero_com", False):
            x = translate_onto_known(state.x, self.x.to(state.x), mask, space)
        tokens = {k: torch.where(self.token_masks[k].bool(), self.tokens[k].to(v), v) if k in self.token_masks else v
                  for k, v in state.tokens.items()}
        return MixedState(x, tokens)


def flow_time_grid(steps: int, *, kind: str = "uniform", device=None) -> Tensor:
    """Decreasing times ``[steps + 1]`` from 1 to 0 (``u_k = 1 - k / steps``): ``kind="uniform"``, ``t_k = u_k``;
    ``"cosine"``, ``t_k = (1 - cos(pi u_k)) / 2``, closer together near both ends; ``"quadratic"``, ``t_k = u_k^2``,
    closer together near the data (the last step is ``1 / steps^2`` long, the first ``(2 steps - 1) / steps^2``)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    k = torch.linspace(1.0, 0.0, steps + 1, device=device, dtype=torch.float64)
    if kind == "uniform":
        ts = k
    elif kind == "cosine":
        ts = (1 - torch.cos(torch.pi * k)) / 2
    elif kind == "quadratic":
        ts = k.square()
    else:
        raise ValueError(f"unknown time grid {kind!r}; choose one of {TIME_GRIDS}")
    return ts.float()


def sample_mixed_flow(
    model: MixedModel,
    state: MixedState,
    ts: Tensor,
    *,
    path: FlowPath,
    categorical: dict[str, CategoricalPath],
    space: Space,
    eta: float = 0.0,
    noise: float = 0.0,
    known: MixedKnown | None = None,
    resample: int = 1,
    self_condition: bool = False,
    cond=None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = True,
) -> MixedState:
    """Integrate a joint flow from ``ts[0]`` (source) to ``ts[-1]`` (``0``: data); one network call per step.

    Continuous block: ``x_s = alpha_s x0_hat + sigma_s eps_hat`` with ``eps_hat = (x_t - alpha_t x0_hat) /
    sigma_t`` -- the exact linear-path update (Euler on the ODE, which is linear in ``t`` for ``path.sigma = 0``).
    ``noise`` (DDIM's eta, in ``[0, 1]``) makes that step stochastic: ``x_s = alpha_s x0_hat + sqrt(sigma_s^2 -
    c^2) eps_hat + c z`` with ``c^2 = noise^2 sigma_s^2 (1 - (alpha_t sigma_s / (alpha_s sigma_t))^2)`` -- at ``1``
    the Gaussian posterior ``q(x_s | x_t, x0_hat)`` of the path's forward transition, at ``0`` the ODE.
    Tokens: :meth:`CategoricalPath.step` with ``softmax(logits)`` (``eta``: its re-masking stochasticity).
    ``self_condition``: the model is called as ``model(state, t, prev)`` with its previous prediction (``None`` at
    the first call), as self-conditioned networks are trained.  ``cond``: a condition handed to every model call
    (``model(..., cond=cond)``), as the other samplers do.  ``callback`` receives ``{"i", "t", "state",
    "prediction"}`` after each step.

    Inpainting (``known``): RePaint's replacement on the flow -- after every step the given part is replaced by
    its own point on the path at the new time, ``x_s[given] = (1 - s) x_given + s eps_given`` with one source draw
    ``eps_given`` for the whole trajectory (the path stays straight).  Given tokens of a masking chain are revealed
    from the start (its posterior of the masked tokens given the revealed ones does not depend on ``t``, so this
    is exact for an exact model); on other chains a given token is revealed once ``s`` falls below its own uniform
    threshold (a fraction ``1 - s`` at time ``s``, as on the data's path).  In a zero-CoM space the given atoms are first translated onto the centroid the state gives them (the
    frame floats with the sample), and the final state is translated back (:meth:`MixedKnown.restore`).  The
    result holds the given values exactly.  Replacement alone is biased (the generated part does not see the
    given part early enough); RePaint's cure is ``resample = U > 1`` with a stochastic step (``noise = 1``): each
    step is repeated ``U`` times, going back from ``s`` to ``t`` through the forward transitions of the path
    (:meth:`~moldiff.diffusion.processes.Process.transition`) and of the tokens
    (:meth:`~moldiff.diffusion.categorical.CategoricalPath.renoise`) in between -- ``steps * U`` network calls.
    The test checks the result against the exact conditional of a correlated Gaussian and of correlated tokens.
    """
    if not 0 <= noise <= 1:
        raise ValueError(f"noise must be in [0, 1], got {noise}")
    if resample < 1:
        raise ValueError(f"resample must be >= 1, got {resample}")
    if path.sigma != 0:
        raise ValueError("sample_mixed_flow integrates the deterministic path (process.sigma = 0)")
    missing = set(categorical) ^ set(state.tokens)
    if missing:
        raise ValueError(f"token families and categorical paths differ: {sorted(missing)}")
    x, tokens = state.x, dict(state.tokens)
    paste = _replacement(known, x, tokens, path, categorical, space, generator) if known is not None else None
    if paste is not None:
        x, tokens = paste(x, tokens, float(ts[0]))
    pred = None
    for i in progress_bar(range(len(ts) - 1), enabled=progress, desc="flow", leave=False):
        t, s = float(ts[i]), float(ts[i + 1])
        a_t, s_t = (float(v) for v in path.marginal(torch.tensor(t, dtype=torch.float64)))
        a_s, s_s = (float(v) for v in path.marginal(torch.tensor(s, dtype=torch.float64)))
        c = noise * s_s * max(0.0, 1 - (a_t * s_s / (a_s * s_t)) ** 2) ** 0.5 if noise and s_t > 0 else 0.0
        for u in range(resample):
            t_vec = torch.full((space.num_samples(x),), t, device=x.device)
            extra = {} if cond is None else {"cond": cond}  # the condition, as every sampler hands it over
            pred = (model(MixedState(x, tokens), t_vec, pred, **extra) if self_condition
                    else model(MixedState(x, tokens), t_vec, **extra))
            eps = (x - a_t * pred.x0) / max(s_t, 1e-12)
            x = a_s * pred.x0 + (s_s**2 - c**2) ** 0.5 * eps
            if c:
                x = x + c * space.randn_like(x, generator)
            x = space.project(x)
            for name, cat in categorical.items():
                probs = torch.softmax(pred.logits[name].float(), dim=-1)
                tokens[name] = cat.step(tokens[name], probs, t, s, eta=eta, generator=generator)
            if paste is not None:
                x, tokens = paste(x, tokens, s)
            if u + 1 < resample:  # back to t through the forward transitions, and again
                ratio, var = path.transition(torch.tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64))
                x = space.project(float(ratio) * x + max(float(var), 0.0) ** 0.5 * space.randn_like(x, generator))
                tokens = {k: categorical[k].renoise(v, s, t, generator=generator) for k, v in tokens.items()}
                if paste is not None:
                    x, tokens = paste(x, tokens, t)
        if callback is not None:
            callback({"i": i, "t": s, "state": MixedState(x, dict(tokens)), "prediction": pred})
    out = MixedState(x, tokens)
    return out if known is None else known.restore(out, space)


def _replacement(known: MixedKnown, x: Tensor, tokens: dict[str, Tensor], path: FlowPath,
                 categorical: dict[str, CategoricalPath], space: Space, generator: torch.Generator | None):
    """``paste(x, tokens, s) -> (x, tokens)``: the given part at time ``s`` (see :func:`sample_mixed_flow`)."""
    mask = torch.as_tensor(known.x_mask, device=x.device).bool().expand_as(x)
    given = torch.where(mask, known.x.to(x), torch.zeros_like(x))
    if not torch.isfinite(given).all():
        raise ValueError("the given values contain NaN or inf")
    unknown_families = set(known.token_masks) - set(tokens)
    if unknown_families:
        raise ValueError(f"given tokens of unknown families {sorted(unknown_families)}")
    eps = space.randn_like(x, generator) * path.prior_std if known.source is None else known.source.to(x)
    # a masking chain's posterior of the masked tokens does not depend on t given the revealed ones: the given
    # tokens are revealed from the start (threshold 1); other chains reveal them at the data path's rate
    thresholds = {k: torch.ones(tokens[k].shape, device=x.device) if categorical[k].prior == "mask"
                  else torch.rand(tokens[k].shape, generator=generator, device=x.device) for k in known.token_masks}
    zero_com = getattr(space, "zero_com", False)
    rows = mask.all(-1, keepdim=True).to(x.dtype) if zero_com else None

    def paste(x: Tensor, toks: dict[str, Tensor], s: float) -> tuple[Tensor, dict[str, Tensor]]:
        a_s, s_s = path.marginal(torch.tensor(s, dtype=torch.float64))
        target = float(a_s) * given + float(s_s) * eps
        if zero_com:  # move the given block onto the centroid the current state gives those atoms
            shift = space.graph_sum((x - target) * rows) / space.graph_sum(rows).clamp(min=1)
            target = target + shift[space.batch]
        x = space.project(torch.where(mask, target, x))
        out = dict(toks)
        for k, m in known.token_masks.items():
            reveal = m.to(x.device).bool() & (thresholds[k] >= s)
            out[k] = torch.where(reveal, known.tokens[k].to(toks[k]), toks[k])
        return x, out

    return paste
