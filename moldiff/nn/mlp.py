"""A residual MLP denoiser for flat states ``[B, dim]`` (2D toys, low-dimensional systems)."""

from __future__ import annotations

from torch import Tensor, nn

from .embeddings import ConditionEmbedding, SinusoidalEmbedding

__all__ = ["MLPDenoiser"]


class _Block(nn.Module):
    def __init__(self, width: int, emb_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.lin1 = nn.Linear(width, width)
        self.emb = nn.Linear(emb_dim, width)
        self.lin2 = nn.Linear(width, width)
        self.act = nn.SiLU()

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        y = self.act(self.lin1(self.norm(h)) + self.emb(e))
        return h + self.lin2(self.act(y))


class MLPDenoiser(nn.Module):
    """``(x [B, dim], t [B]) -> [B, dim]``: input projection, ``depth`` residual blocks conditioned on a
    sinusoidal time embedding, output projection (zero-initialised so training starts from 0).

    ``x`` may also be ``[B, *G, dim]``, a group of inputs per time ``t [B]`` (e.g. every window of one
    trajectory): the time embedding is then computed once per group and broadcast, not once per row.

    With ``cond_dim > 0`` it is conditional: ``forward(x, t, cond)`` with a global condition ``cond [B, cond_dim]``
    added to the time embedding through a :class:`ConditionEmbedding` (``None`` or NaN rows: unconditional).
    ``time_scale``: the sinusoidal embedding's scale (1000 for ``t in [0, 1]``; EDM's ``c_noise = ln(s) / 4``,
    of order 1, wants about 100)."""

    def __init__(self, dim: int, width: int = 256, depth: int = 4, time_dim: int = 64, cond_dim: int = 0,
                 time_scale: float = 1000.0):
        super().__init__()
        self.embed = SinusoidalEmbedding(time_dim, scale=time_scale)
        self.cond = ConditionEmbedding(cond_dim, width) if cond_dim > 0 else None
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(_Block(width, width) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dim))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        e = self.time_mlp(self.embed(t))
        if self.cond is not None:
            e = e + self.cond(cond, e.shape[0])
        elif cond is not None:
            raise ValueError("this MLPDenoiser is unconditional (cond_dim = 0) but was given a condition")
        if x.ndim > 2:  # [B, *G, dim]: one embedding per leading index, broadcast over the group
            e = e.reshape(e.shape[0], *([1] * (x.ndim - 2)), e.shape[-1])
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, e)
        return self.out(h)
