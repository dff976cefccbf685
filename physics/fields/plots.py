"""Figures of an assimilation: time series and Hovmoller diagrams (Lorenz), vorticity fields, energy spectra
and observation masks (Kolmogorov), and an animated GIF of the first assimilated trajectory."""

from __future__ import annotations

import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.animation import FuncAnimation, PillowWriter  # noqa: E402
from .navier_stokes import energy_spectrum

__all__ = ["assimilation_figures", "timeseries_figure", "hovmoller_figure", "field_figure", "spectra_figure",
           "mask_figure", "write_animation", "reconstruction_figure", "spectrum_comparison_figure", "trajectory_grid"]

COLORS = {"sda": "tab:blue", "dps": "tab:orange", "enkf": "tab:green", "etkf": "tab:purple", "enks": "tab:brown"}


def _observed_values(operator, y: np.ndarray, length: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """For one-hot operators (full / subsample / mask): variable -> (times, values) of its observations."""
    h = operator.matrix().numpy()
    if not np.all((h == 0) | (h == 1)) or not np.all(h.sum(1) == 1):
        return {}
    var = h.argmax(1)
    times = np.asarray(operator.times(length))
    ys = y.reshape(len(times), -1)
    return {int(v): (times, ys[:, j]) for j, v in enumerate(var)}


def timeseries_figure(truth, y, ensembles, operator, interval: float, variables, names, title: str):
    """Rows: variables; columns: methods.  Truth, observations, ensemble mean and +-2 std band."""
    length = truth.shape[0]
    t = np.arange(length) * interval
    obs = _observed_values(operator, y, length)
    methods = list(ensembles)
    fig, axes = plt.subplots(len(variables), len(methods), figsize=(4 * len(methods), 2.2 * len(variables)),
                             squeeze=False, sharex=True)
    for j, m in enumerate(methods):
        ens = ensembles[m]  # [M, L, D]
        mean, std = ens.mean(0), ens.std(0)
        for i, v in enumerate(variables):
            ax = axes[i, j]
            ax.plot(t, truth[:, v], "k", lw=1, label="truth")
            ax.fill_between(t, mean[:, v] - 2 * std[:, v], mean[:, v] + 2 * std[:, v], color=COLORS.get(m), alpha=0.25)
            ax.plot(t, mean[:, v], color=COLORS.get(m), lw=1, label=f"{m} mean")
            if v in obs:
                ax.plot(obs[v][0] * interval, obs[v][1], "r.", ms=3, label="observed")
            if i == 0:
                ax.set_title(m.upper())
            if j == 0:
                ax.set_ylabel(names[i])
    axes[-1, 0].set_xlabel("time (MTU)")
    axes[0, 0].legend(fontsize=7, loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def hovmoller_figure(truth, ensembles, interval: float, title: str):
    """Truth and each method's ensemble-mean error, time x variable."""
    panels = {"truth": truth} | {f"{m} mean - truth": e.mean(0) - truth for m, e in ensembles.items()}
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 4), squeeze=False)
    extent = [0, truth.shape[1], truth.shape[0] * interval, 0]
    err_lim = max(1e-6, max(float(np.abs(p).max()) for k, p in panels.items() if k != "truth"))
    for ax, (name, p) in zip(axes[0], panels.items()):
        kw = {"cmap": "RdBu_r", "vmin": -err_lim, "vmax": err_lim} if name != "truth" else {"cmap": "viridis"}
        im = ax.imshow(p, aspect="auto", extent=extent, **kw)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("variable")
        fig.colorbar(im, ax=ax, fraction=0.05)
    axes[0, 0].set_ylabel("time (MTU)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _obs_image(operator, y_t: np.ndarray) -> np.ndarray:
    """An observation at one time as an image on the state grid (NaN where unobserved)."""
    h = operator.matrix().numpy()
    img = np.full(operator.state_size, np.nan)
    if operator.kind == "coarsen":
        img = (h.T @ y_t) / np.maximum(h.T.sum(1), 1e-12) * (h.T.sum(1) > 0)
    else:
        img[h.argmax(1)] = y_t
    return img.reshape(operator.state_shape)


def _image_grid(rows, columns, col_title, lim: float, title: str, width: float = 2.3, height: float = 2.3,
                fontsize: int | None = None):
    """Images on one symmetric colour scale ``[-lim, lim]``: ``rows`` are ``(name, get)`` with ``get(column)`` an
    image; ``col_title(column)`` titles the first row (``None``: no titles)."""
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(width * len(columns), height * len(rows)), squeeze=False)
    for i, (name, get) in enumerate(rows):
        for j, c in enumerate(columns):
            ax = axes[i, j]
            ax.imshow(get(c), cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0 and col_title is not None:
                ax.set_title(col_title(c), fontsize=9)
            if j == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.suptitle(title, fontsize=fontsize)
    fig.tight_layout()
    return fig


def field_figure(truth, y, ensembles, operator, interval: float, title: str, columns: int = 4):
    """Rows: truth, observation, and per diffusion method the posterior mean, one sample and the error of the mean
    (mean - truth); columns: times."""
    length = truth.shape[0]
    obs_times = operator.times(length)
    cols = [obs_times[i] for i in np.linspace(0, len(obs_times) - 1, min(columns, len(obs_times))).astype(int)]
    ys = y.reshape(len(obs_times), -1)
    rows = [("truth", lambda k: truth[k]), ("observed", lambda k: _obs_image(operator, ys[obs_times.index(k)]))]
    for m, e in ensembles.items():
        rows += [(f"{m} mean", lambda k, e=e: e[:, k].mean(0)), (f"{m} sample", lambda k, e=e: e[0, k]),
                 (f"{m} mean - truth", lambda k, e=e: e[:, k].mean(0) - truth[k])]
    return _image_grid(rows, cols, lambda k: f"t = {k * interval:.1f}", float(np.abs(truth).max()), title)


def spectra_figure(truth, ensembles, title: str):
    """Isotropic energy spectra averaged over time: truth against each method's posterior samples."""
    fig, ax = plt.subplots(figsize=(5, 4))
    k, e = energy_spectrum(torch.as_tensor(truth, dtype=torch.float64))
    ax.loglog(k[1:].numpy(), e.reshape(-1, len(k)).mean(0)[1:].numpy(), "k", lw=2, label="truth")
    for m, ens in ensembles.items():
        k, e = energy_spectrum(torch.as_tensor(ens, dtype=torch.float64))
        ax.loglog(k[1:].numpy(), e.reshape(-1, len(k)).mean(0)[1:].numpy(), color=COLORS.get(m), label=m)
    ax.set_xlabel("wavenumber k")
    ax.set_ylabel("E(k)")
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def reconstruction_figure(x, x_hat, title: str):
    """Columns: states ``x [N, H, W]``; rows: the data, the reconstruction ``x_hat`` and the error."""
    rows = [(name, lambda j, a=arr: a[j]) for name, arr in
            {"data": x, "reconstruction": x_hat, "error": x_hat - x}.items()]
    return _image_grid(rows, range(len(x)), None, float(np.abs(x).max()), title, height=7 / 3, fontsize=9)


def trajectory_grid(rows: dict, interval: float, title: str, columns: int = 5):
    """Rows: ``name -> trajectory [L, H, W]``; columns: ``columns`` evenly spaced times (one colour scale, the
    first row's)."""
    first = next(iter(rows.values()))
    times = np.linspace(0, len(first) - 1, min(columns, len(first))).astype(int)
    return _image_grid([(name, lambda k, t=traj: t[k]) for name, traj in rows.items()], times,
                       lambda k: f"t = {k * interval:.1f}", float(np.abs(first).max()), title, width=2.2, fontsize=9)


def spectrum_comparison_figure(spectra: dict, title: str):
    """Radial power spectra ``name -> P [K]`` on log-log axes (``k >= 1``)."""
    fig, ax = plt.subplots(figsize=(5, 4))
    for i, (name, p) in enumerate(spectra.items()):
        k = np.arange(len(p))
        ax.loglog(k[1:], np.asarray(p)[1:], "k" if i == 0 else "-", lw=2 if i == 0 else 1.2, label=name)
    ax.set_xlabel("wavenumber k")
    ax.set_ylabel("power")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def mask_figure(operator, title: str):
    fig, ax = plt.subplots(figsize=(4, 4) if len(operator.state_shape) == 2 else (6, 1.5))
    mask = operator.observed_mask().numpy().astype(float)
    ax.imshow(mask if mask.ndim == 2 else mask[None], cmap="Greys", vmin=0, vmax=1, origin="lower", aspect="auto")
    ax.set_title(f"{title}: {int(mask.sum())} of {mask.size} observed", fontsize=9)
    fig.tight_layout()
    return fig


def write_animation(path: Path, truth, ensembles, interval: float, title: str, fps: int = 6) -> Path:
    """Animated GIF over the states of one trajectory: fields side by side, or state vectors as lines."""
    panels = {"truth": truth} | {f"{m} mean": e.mean(0) for m, e in ensembles.items()}
    if truth.ndim == 3:  # fields [L, n, n]
        panels |= {f"{m} sample": e[0] for m, e in ensembles.items()}
        lim = float(np.abs(truth).max())
        fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels), 2.7), squeeze=False)
        ims = []
        for ax, (name, p) in zip(axes[0], panels.items()):
            ims.append(ax.imshow(p[0], cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower"))
            ax.set_title(name, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])

        def update(k):
            for im, p in zip(ims, panels.values()):
                im.set_data(p[k])
            fig.suptitle(f"{title}  t = {k * interval:.2f}", fontsize=9)
            return ims
    else:  # vectors [L, D]
        fig, ax = plt.subplots(figsize=(6, 3))
        lines = [ax.plot(p[0], label=name, color="k" if name == "truth" else COLORS.get(name.split()[0]))[0]
                 for name, p in panels.items()]
        lo, hi = float(truth.min()), float(truth.max())
        ax.set_ylim(lo - 0.2 * (hi - lo), hi + 0.2 * (hi - lo))
        ax.set_xlabel("variable")
        ax.legend(fontsize=7, loc="upper right")

        def update(k):
            for line, p in zip(lines, panels.values()):
                line.set_ydata(p[k])
            ax.set_title(f"{title}  t = {k * interval:.2f}", fontsize=9)
            return lines
    anim = FuncAnimation(fig, update, frames=truth.shape[0], blit=False)
    anim.save(str(path), writer=PillowWriter(fps=fps))
    plt.close(fig)
    return path


def assimilation_figures(task, truth, y, ensembles, metrics, *, animation: bool = True):
    """The task's figures and files for its first assimilated trajectory.  ``truth [B, L, *S]``, ``y [B, P]``,
    ``ensembles``: method -> ``[B, M, L, *S]``."""
    system = task.cfg.data.system
    op, interval = task.operator, task.spec.interval
    tr = truth[0].numpy()
    yy = y[0].numpy()
    ens = {m: e[0].numpy() for m, e in ensembles.items()}
    rmse = ", ".join(f"{m} {metrics[f'{m}/rmse']:.3f}" for m in ensembles)
    title = f"{system}, {op.kind} observations every {op.every} states, noise {task.cfg.observation.noise_std:g}; RMSE {rmse}"
    figures = {"observation_mask": mask_figure(op, f"{system} observation operator ({op.kind})")}
    if len(task.shape) == 1:
        d = task.shape[0]
        variables = [0, 1, 2] if d == 3 else [0, 1, 2, 3]
        names = ["x", "y", "z"] if d == 3 else [f"x{v}" for v in variables]
        if ens:
            figures["timeseries"] = timeseries_figure(tr, yy, ens, op, interval, variables, names, title)
            if d > 3:
                figures["hovmoller"] = hovmoller_figure(tr, ens, interval, title)
    else:
        figures["fields"] = field_figure(tr, yy, ens, op, interval, title)
        figures["spectra"] = spectra_figure(tr, ens, f"{system} energy spectra (first test trajectory)")
    files = {}
    if animation and ens:
        out = Path(tempfile.mkdtemp(prefix="moldiff-assimilation-")) / "assimilation.gif"
        files["animation"] = write_animation(out, tr, ens, interval, system)
    return figures, files
