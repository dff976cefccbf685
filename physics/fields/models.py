"""Trajectory priors in the style of score-based data assimilation (Rozet & Louppe 2023).

For a Markov chain ``x_1 -> x_2 -> ...`` the score of a whole trajectory is well approximated by *local*
scores: the score at state ``i`` depends (nearly) only on the window ``x_{i-k} .. x_{i+k}``.
:class:`LocalScoreNet` runs one backbone on every window of ``2k + 1`` consecutive states and composes the
outputs into a prediction for a trajectory of any length ``L >= 2k + 1``: state ``i`` takes the centre of
window ``i - k``; the first ``k`` states take the head of the first window and the last ``k`` the tail of
the last.  Trained on windows (``L = 2k + 1``, where it *is* the backbone), it scores long trajectories at
a cost linear in ``L``.

Backbones see a window ``[B', 2k + 1, *S]``: :class:`FlatWindow` (an MLP on the flattened window, for
Lorenz states ``S = [D]``) or a U-Net with the window's states as channels (fields ``S = [n, n]``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from moldiff.nn import MLPDenoiser

__all__ = ["LocalScoreNet", "FlatWindow", "WindowAsChannels"]


class FlatWindow(nn.Module):
    """An :class:`~moldiff.nn.MLPDenoiser` on flattened windows: ``([B', w, *S], t [B']) -> [B', w, *S]``.

    ``grouped``: it also takes all windows of a trajectory at once, ``([B, n, w, *S], t [B])``, and then computes
    the time embedding once per trajectory instead of once per window."""

    grouped = True

    @staticmethod
    def check_options(width: int = 256, depth: int = 4) -> None:
        """The value checks of this network's options (its constructor and config validation call them)."""
        if width < 1 or depth < 1:
            raise ValueError(f"width and depth must be >= 1, got {width}, {depth}")

    def __init__(self, window_numel: int, width: int = 256, depth: int = 4, time_dim: int = 64):
        super().__init__()
        self.check_options(width, depth)
        self.window_numel = window_numel
        self.mlp = MLPDenoiser(window_numel, width=width, depth=depth, time_dim=time_dim)

    def forward(self, w: Tensor, t: Tensor) -> Tensor:
        if w[0].numel() == self.window_numel:  # [B', w, *S]
            return self.mlp(w.flatten(1), t).reshape(w.shape)
        return self.mlp(w.flatten(2), t).reshape(w.shape)  # [B, n, w, *S]: grouped by trajectory


class WindowAsChannels(nn.Module):
    """A 2D image backbone (a U-Net) on windows: ``([B', w, *C, H, W], t [B']) -> same``, the ``w`` states (and
    their channels ``C``, if any) stacked along the backbone's channel axis."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, w: Tensor, t: Tensor) -> Tensor:
        return self.backbone(w.reshape(w.shape[0], -1, *w.shape[-2:]), t).reshape(w.shape)


class LocalScoreNet(nn.Module):
    """``(x [B, L, *S], t [B]) -> [B, L, *S]`` composed from a window backbone (see module docstring).

    Args:
        backbone: ``([B', 2k + 1, *S], t [B']) -> [B', 2k + 1, *S]``; one with ``grouped = True`` is called
            with every window of each trajectory at once, ``([B, n, 2k + 1, *S], t [B])``.
        k: half-width of the window (the Markov order assumed of the trajectory).
    """

    def __init__(self, backbone: nn.Module, k: int):
        super().__init__()
        if k < 0:
            raise ValueError(f"window half-width k must be >= 0, got {k}")
        self.backbone = backbone
        self.k = k

    @property
    def window(self) -> int:
        return 2 * self.k + 1

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        b, length = x.shape[:2]
        w, k = self.window, self.k
        if length < w:
            raise ValueError(f"trajectories need at least 2k + 1 = {w} states, got {length}")
        n_win = length - w + 1
        windows = x.unfold(1, w, 1).movedim(-1, 2)  # [B, n_win, *S, w] -> [B, n_win, w, *S]
        if getattr(self.backbone, "grouped", False):  # one time embedding per trajectory
            out = self.backbone(windows, t)
        else:
            out = self.backbone(windows.reshape(b * n_win, w, *x.shape[2:]), t.repeat_interleave(n_win))
            out = out.reshape(b, n_win, w, *x.shape[2:])
        return torch.cat([out[:, 0, :k], out[:, :, k], out[:, -1, k + 1 :]], dim=1)
