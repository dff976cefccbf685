"""Discrete flow matching for categorical variables (Campbell et al. 2024; Gat et al. 2024).

A token takes one of ``K`` classes.  Same time convention as :class:`~moldiff.diffusion.processes.FlowPath`:
``t = 0`` is the data, ``t = 1`` the source.  The conditional path keeps the data token with probability
``1 - t`` and otherwise holds a source token:

* ``prior="mask"`` (absorbing): the source is an extra ``MASK`` class (index ``K``);
* ``prior="uniform"``: the source is a uniformly drawn class.

A network predicts ``p(x_0 | x_t)`` (logits over the ``K`` data classes) and is trained by cross-entropy.
Sampling runs the continuous-time Markov chain whose rates generate the path (Campbell et al. 2024, eq. for
the linear schedule), integrated with exact per-step jump probabilities from ``t`` down to ``s < t``:

* mask: a masked token is revealed with probability ``(t - s) / t``, its class drawn from ``p(x_0 | x_t)``;
* uniform: a token jumps to class ``j`` with probability ``(t - s) / t * p(x_0 = j | x_t)``.

For a single token with the exact ``p(x_0 | x_t)`` the mask chain reproduces the data distribution at any step
count (a masked token's posterior does not change with time), the uniform chain in one step from ``t = 1`` and
in the limit of small steps (its posterior moves with ``t`` within a step); tokens are updated independently
given the current state, which is exact as the steps shrink.  The toy tests check all three.  Nothing here
knows about molecules: atom types, charges and bond types are three :class:`CategoricalPath` s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["CategoricalPath", "CATEGORICAL_PRIORS"]

CATEGORICAL_PRIORS = ("mask", "uniform")


@dataclass(frozen=True)
class CategoricalPath:
    """Discrete flow over ``num_classes`` classes with a ``mask`` or ``uniform`` source (module docstring).

    Tokens are long tensors of any shape; ``t`` broadcasts against them (per-token or per-sample times
    expanded by the caller).
    """

    num_classes: int
    prior: str = "mask"

    def __post_init__(self) -> None:
        if self.prior not in CATEGORICAL_PRIORS:
            raise ValueError(f"unknown categorical prior {self.prior!r}; choose one of {CATEGORICAL_PRIORS}")
        if self.num_classes < 1:
            raise ValueError("num_classes must be >= 1")

    @property
    def mask_index(self) -> int | None:
        """The MASK token's index (``num_classes``) for the mask prior, else None."""
        return self.num_classes if self.prior == "mask" else None

    @property
    def num_states(self) -> int:
        """Values a noisy token can take (``K + 1`` with a mask, else ``K``): the input embedding's size."""
        return self.num_classes + (self.prior == "mask")

    def prior_sample(self, shape, *, generator=None, device=None) -> Tensor:
        """Source tokens of ``shape``."""
        if self.prior == "mask":
            return torch.full(tuple(shape), self.num_classes, dtype=torch.long, device=device)
        return torch.randint(self.num_classes, tuple(shape), generator=generator, device=device)

    def marginal(self, x0: Tensor, t: Tensor) -> Tensor:
        """``p_t(x_t | x_0)`` as probabilities ``[*x0.shape, num_states]``."""
        t = torch.as_tensor(t, dtype=torch.float32, device=x0.device).expand(x0.shape)[..., None]
        keep = F.one_hot(x0, self.num_states).float() * (1 - t)
        if self.prior == "mask":
            src = F.one_hot(torch.full_like(x0, self.num_classes), self.num_states).float()
        else:
            src = torch.full((*x0.shape, self.num_states), 1.0 / self.num_classes, device=x0.device)
        return keep + t * src

    def corrupt(self, x0: Tensor, t: Tensor, *, generator=None) -> Tensor:
        """Draw ``x_t ~ p_t(. | x_0)``: each token kept with probability ``1 - t``, else a source token."""
        t = torch.as_tensor(t, dtype=torch.float32, device=x0.device).expand(x0.shape)
        u = torch.rand(x0.shape, generator=generator, device=x0.device)
        src = self.prior_sample(x0.shape, generator=generator, device=x0.device)
        return torch.where(u < t, src, x0)

    def loss(self, logits: Tensor, x0: Tensor) -> Tensor:
        """Per-token cross-entropy of ``p(x_0 | x_t)``: ``logits [*, K]``, ``x0 [*]`` -> ``[*]``."""
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), x0.reshape(-1),
                               reduction="none").reshape(x0.shape)

    def renoise(self, x_s: Tensor, s: float, t: float, *, generator=None) -> Tensor:
        """A draw of ``x_t`` given ``x_s`` (``s < t``) under the forward chain: each token kept with probability
        ``(1 - t) / (1 - s)``, else a source token -- the transition whose marginals are :meth:`marginal`."""
        s, t = float(s), float(t)
        if not 0 <= s < t <= 1:
            raise ValueError(f"renoise goes from s to t with 0 <= s < t <= 1, got s={s}, t={t}")
        u = torch.rand(x_s.shape, generator=generator, device=x_s.device)
        src = self.prior_sample(x_s.shape, generator=generator, device=x_s.device)
        return torch.where(u < (1 - t) / (1 - s), x_s, src)

    def step(self, x_t: Tensor, probs: Tensor, t: float, s: float, *, eta: float = 0.0, generator=None) -> Tensor:
        """One step of the reverse chain from ``t`` to ``s < t`` given ``probs = p(x_0 | x_t)``
        ``[*x_t.shape, K]`` (rows summing to one); at ``s = 0`` every token ends on a data class.

        ``eta > 0`` (mask prior only) adds Campbell et al.'s detailed-balance stochasticity, which leaves the
        marginals unchanged but lets the chain undo early choices: a revealed token is re-masked with
        probability ``eta (t - s)`` and a masked one revealed with probability ``(t - s) (1 + eta (1 - t)) / t``.
        """
        t, s = float(t), float(s)
        if not 0 <= s < t <= 1:
            raise ValueError(f"a step goes from t to s with 0 <= s < t <= 1, got t={t}, s={s}")
        if eta < 0 or (eta > 0 and self.prior != "mask"):
            raise ValueError(f"eta must be >= 0 and needs the mask prior, got eta={eta}, prior={self.prior!r}")
        dt = t - s
        flat = probs.reshape(-1, probs.shape[-1]).float().clamp(min=0)
        draw = torch.multinomial(flat + 1e-12, 1, generator=generator).reshape(x_t.shape)
        u = torch.rand(x_t.shape, generator=generator, device=x_t.device)
        if self.prior == "mask":
            masked = x_t == self.num_classes
            p_reveal = min(1.0, dt * (1 + eta * (1 - t)) / t)
            out = torch.where(masked & (u < p_reveal), draw, x_t)
            if eta > 0 and s > 0:
                remask = ~masked & (u < min(1.0, eta * dt))
                out = torch.where(remask, torch.full_like(x_t, self.num_classes), out)
            return out
        return torch.where(u < dt / t, draw, x_t)
