"""Reference samples of DW4, LJ13 and LJ55, made by this project with MALA and cached on disk.

Each system has a :class:`ReferenceRecipe`; each split (``train``, ``val``, ``test``) comes from its *own*
independent set of chains (seed ``seed_offset + 0 / 1 / 2``), so the splits are independent samples of the
Boltzmann distribution.  A split is built once and cached as
``$MOLDIFF_CACHE/particles/<system>_<split>_<hash>.npz`` (default root ``~/.cache/moldiff``), where
``<hash>`` covers everything the data depends on (system parameters, the split's part of the recipe, the
algorithm version): change a recipe and a new file is built beside the old one.  Files are written
atomically (temp file + ``os.replace``) with a sha256 checksum of their arrays; a corrupt, truncated or
mismatching file is reported and rebuilt, never trusted.

Samples are stored *sample-major*: row ``i`` is the ``i // C``-th kept state of chain ``i % C``, so the first
``m`` rows (``reference_samples(..., n=m)``) spread over as many chains as possible.  Positions are float32
with zero centre of mass; energies are recomputed in float64 from the stored float32 positions.

How the chains run: C chains start from random configurations (DW4: Gaussian positions; LJ: uniform points
in a ball, relaxed by a short clipped gradient descent so that no two particles overlap), adapt their step
size during ``burn_in`` MALA steps (discarded), then keep every ``thin``-th state.  ``burn_in`` is several
energy autocorrelation times (and, for DW4, several times the slower time of hopping between its
"2 short pairs" and "4 short pairs" shapes); ``thin`` is about the energy's integrated autocorrelation time.
:func:`reference_info` reports the measured statistics, including the energy's first-half / second-half
means (a residual drift would show there).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from moldiff.fileio import cache_dir, read_npz_cache, write_npz_cache

from moldiff.diffusion.spaces import remove_com_dense

from .energies import ParticleSystem, get_system, pairwise_distances
from .mcmc import integrated_autocorr_time, mala

__all__ = [
    "SPLITS",
    "ReferenceRecipe",
    "RECIPES",
    "ReferenceData",
    "ReferenceCacheError",
    "default_cache_dir",
    "cache_path",
    "initial_states",
    "minimize_energy",
    "load_reference",
    "reference_samples",
    "reference_info",
    "distance_histogram",
    "sanity_figure",
]

#: bump when the generation algorithm changes (part of every cache hash)
ALGORITHM_VERSION = 1
CACHE_VERSION = 1
SPLITS = ("train", "val", "test")
_ARRAYS = ("samples", "energies", "chain_energies", "acceptance", "step_size", "energy_trace", "mean_energy_trace")


class ReferenceCacheError(RuntimeError):
    """A reference cache cannot be written (or read back)."""


def default_cache_dir() -> Path:
    """``$MOLDIFF_CACHE/particles`` or ``~/.cache/moldiff/particles``."""
    return cache_dir("particles")


@dataclass(frozen=True)
class ReferenceRecipe:
    """How one system's reference splits are generated.

    Split ``s`` (``SPLITS.index(s) = j``) has ``sizes[j]`` samples from ``ceil(sizes[j] / samples_per_chain[j])``
    independent chains seeded with ``seed_offset + j``; each chain runs ``burn_in`` adaptation steps and then
    ``samples_per_chain[j] * thin`` steps, keeping every ``thin``-th state.

    Attributes:
        system: name in ``SYSTEMS`` (or ``SYSTEM_VARIANTS``).
        sizes: samples in (train, val, test).
        samples_per_chain: kept samples per chain in (train, val, test).
        burn_in: MALA steps discarded (step size adapted to ``target_accept`` meanwhile).
        thin: MALA steps between kept samples.
        step_size: initial MALA step size ``h`` (proposal ``x - h grad U + sqrt(2h) xi``).
        seed_offset: seeds of the splits are ``seed_offset + 0, 1, 2``.
        init: ``"gaussian"`` (positions ~ N(0, init_scale^2)) or ``"ball"`` (uniform in a ball of radius
            ``init_scale * n^(1/3)``, then ``minimize_steps`` steps of clipped gradient descent).
        dtype: float dtype of the chains (``"float32"`` or ``"float64"``).
        trace_chains: chains whose energy is recorded at every step (trace plots, autocorrelation time).
    """

    system: str
    sizes: tuple[int, int, int]
    samples_per_chain: tuple[int, int, int]
    burn_in: int
    thin: int
    step_size: float
    seed_offset: int
    init: str = "gaussian"
    init_scale: float = 1.0
    minimize_steps: int = 0
    dtype: str = "float32"
    trace_chains: int = 64
    target_accept: float = 0.574

    def __post_init__(self) -> None:
        if self.init not in ("gaussian", "ball"):
            raise ValueError(f"init must be 'gaussian' or 'ball', got {self.init!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if min(self.sizes) < 1 or min(self.samples_per_chain) < 1 or self.thin < 1 or self.burn_in < 0:
            raise ValueError("sizes, samples_per_chain and thin must be positive, burn_in >= 0")

    def _index(self, split: str) -> int:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
        return SPLITS.index(split)

    def size(self, split: str) -> int:
        return self.sizes[self._index(split)]

    def chains(self, split: str) -> int:
        j = self._index(split)
        return math.ceil(self.sizes[j] / self.samples_per_chain[j])

    def seed(self, split: str) -> int:
        return self.seed_offset + self._index(split)

    def split_spec(self, split: str) -> dict[str, Any]:
        """Everything split ``split`` depends on (what its cache hash covers)."""
        j = self._index(split)
        spec = asdict(self)
        spec.update(split=split, size=self.sizes[j], samples_per_chain=self.samples_per_chain[j],
                    chains=self.chains(split), seed=self.seed(split), algorithm=ALGORITHM_VERSION,
                    system_params=asdict(get_system(self.system)))
        del spec["sizes"]
        return spec

    def split_hash(self, split: str) -> str:
        text = json.dumps(self.split_spec(split), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


#: the project's reference recipes (chosen so that each system builds in minutes on a 2-core CPU; see
#: benchmarks/results/particles_reference.md for the measured statistics)
RECIPES: dict[str, ReferenceRecipe] = {
    # energy tau_int ~ 40 steps, but hopping between the "2 short pairs" and "4 short pairs" shapes ~ 900 steps:
    # burn-in >> 900, and 5,000 sampling steps per train chain
    "dw4": ReferenceRecipe("dw4", sizes=(100_000, 10_000, 10_000), samples_per_chain=(100, 20, 20),
                           burn_in=10_000, thin=50, step_size=0.02, seed_offset=1000, init="gaussian",
                           init_scale=2.0),
    # energy tau_int ~ 400-500 steps for all four LJ systems; the mean energy settles within ~2,500 steps
    "lj13": ReferenceRecipe("lj13", sizes=(100_000, 10_000, 10_000), samples_per_chain=(50, 25, 25),
                            burn_in=5_000, thin=500, step_size=1e-3, seed_offset=2000, init="ball",
                            init_scale=0.7, minimize_steps=300),
    "lj55": ReferenceRecipe("lj55", sizes=(10_000, 5_000, 5_000), samples_per_chain=(50, 25, 25),
                            burn_in=5_000, thin=500, step_size=3e-4, seed_offset=3000, init="ball",
                            init_scale=0.7, minimize_steps=300),
    "lj13_efm": ReferenceRecipe("lj13_efm", sizes=(100_000, 10_000, 10_000), samples_per_chain=(50, 25, 25),
                                burn_in=5_000, thin=500, step_size=5e-4, seed_offset=4000, init="ball",
                                init_scale=0.7, minimize_steps=300),
    "lj55_efm": ReferenceRecipe("lj55_efm", sizes=(10_000, 5_000, 5_000), samples_per_chain=(50, 25, 25),
                                burn_in=5_000, thin=500, step_size=2e-4, seed_offset=5000, init="ball",
                                init_scale=0.7, minimize_steps=300),
}


def minimize_energy(system: ParticleSystem, x: Tensor, *, steps: int = 300, lr: float = 0.01,
                    max_step: float = 0.1) -> Tensor:
    """Gradient descent ``x <- x - lr grad E`` with each particle's displacement clipped at ``max_step``
    (robust from overlapping particles); ``[B, n, d] -> [B, n, d]`` centred, in ``x``'s dtype."""
    x = remove_com_dense(x.detach())
    for _ in range(steps):
        _, g = system.energy_and_grad(x)
        step = -lr * torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
        norm = step.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        x = remove_com_dense(x + step * (max_step / norm).clamp(max=1.0))
    return x


def initial_states(system: ParticleSystem, n_chains: int, recipe: ReferenceRecipe,
                   generator: torch.Generator) -> Tensor:
    """Starting configurations ``[n_chains, n, d]`` (float64, zero CoM) as the recipe says."""
    n, d = system.n_particles, system.dim
    if recipe.init == "gaussian":
        return remove_com_dense(recipe.init_scale * torch.randn(n_chains, n, d, generator=generator, dtype=torch.float64))
    direction = torch.randn(n_chains, n, d, generator=generator, dtype=torch.float64)
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    radius = recipe.init_scale * n ** (1 / d) * torch.rand(n_chains, n, 1, generator=generator,
                                                           dtype=torch.float64) ** (1 / d)
    return minimize_energy(system, direction * radius, steps=recipe.minimize_steps)


@dataclass
class ReferenceData:
    """One cached split: arrays (numpy) and metadata.

    ``samples [N, n, d]`` float32 (sample-major, see module docstring), ``energies [N]`` float64 (of the
    stored samples), ``chain_energies [C, K]`` (MCMC energies per chain and kept step), ``acceptance [C]``,
    ``step_size [C]``, ``energy_trace [C_trace, burn_in + K thin]``, ``mean_energy_trace [burn_in + K thin]``;
    ``meta`` holds the recipe spec, wall time and summary statistics.
    """

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    path: Path | None = None

    @property
    def samples(self) -> np.ndarray:
        return self.arrays["samples"]

    @property
    def energies(self) -> np.ndarray:
        return self.arrays["energies"]


def _energies_float64(system: ParticleSystem, samples: np.ndarray, chunk: int = 4096) -> np.ndarray:
    x = torch.from_numpy(samples).to(torch.float64)
    with torch.no_grad():
        return torch.cat([system.energy(c) for c in x.split(chunk)]).numpy()


def _summary(arrays: dict[str, np.ndarray], burn_in: int, thin: int) -> dict[str, Any]:
    """Statistics of a split (stored in the cache's metadata, returned by :func:`reference_info`)."""
    ce = arrays["chain_energies"]  # [C, K]
    C, K = ce.shape
    chain_means = ce.mean(axis=1)
    sem = float(chain_means.std(ddof=1) / math.sqrt(C)) if C > 1 else math.nan
    post = arrays["energy_trace"][:, burn_in:]
    tau_steps = integrated_autocorr_time(post) if post.shape[1] >= 2 else math.nan
    half = K // 2
    var_e = float(ce.var())
    # batch means: each chain's kept samples are one batch of K * thin steps (robust to slow tails that the
    # windowed estimate misses; biased low only if a chain is not much longer than tau)
    tau_batch = float(K * thin * chain_means.var(ddof=1) / var_e) if C > 1 and var_e > 0 else math.nan
    out = {
        "n": int(len(arrays["samples"])),
        "chains": int(C),
        "samples_per_chain": int(K),
        "acceptance": float(np.mean(arrays["acceptance"])),
        "acceptance_min": float(np.min(arrays["acceptance"])),
        "acceptance_max": float(np.max(arrays["acceptance"])),
        "step_size_median": float(np.median(arrays["step_size"])),
        "mean_energy": float(np.mean(arrays["energies"])),
        "std_energy": float(np.std(arrays["energies"])),
        "sem_energy": sem,
        "tau_int_steps": float(tau_steps),
        "tau_int_kept": float(integrated_autocorr_time(ce)) if K >= 2 else math.nan,
        "tau_batch_steps": tau_batch,
        "ess": float(min(len(arrays["samples"]), len(arrays["samples"]) * thin / tau_batch))
        if tau_batch > 0 else math.nan,
    }
    if half >= 1 and C > 1:
        a, b = ce[:, :half].mean(axis=1), ce[:, half:].mean(axis=1)
        d = b - a
        out.update(first_half_mean=float(a.mean()), second_half_mean=float(b.mean()),
                   half_drift=float(d.mean()), half_drift_sem=float(d.std(ddof=1) / math.sqrt(C)))
    return out


def _build(system: ParticleSystem, recipe: ReferenceRecipe, split: str, progress: bool) -> ReferenceData:
    spec = recipe.split_spec(split)
    C, K, N = spec["chains"], spec["samples_per_chain"], spec["size"]
    dtype = getattr(torch, recipe.dtype)
    g = torch.Generator().manual_seed(spec["seed"])
    x0 = initial_states(system, C, recipe, g).to(dtype)
    res = mala(system.reduced_energy, x0, n_steps=K * recipe.thin, step_size=recipe.step_size, generator=g,
               burn_in=recipe.burn_in, thin=recipe.thin, target_accept=recipe.target_accept, zero_com=True,
               trace_chains=recipe.trace_chains, progress=progress, desc=f"{system.name} {split}",
               energy_and_grad_fn=system.reduced_energy_and_grad)
    samples = res.samples.transpose(0, 1).reshape(C * K, system.n_particles, system.dim)[:N]
    samples = remove_com_dense(samples.to(torch.float32)).numpy()
    arrays = {
        "samples": samples,
        "energies": _energies_float64(system, samples),
        "chain_energies": res.energies.cpu().numpy().astype(np.float64),
        "acceptance": res.acceptance.cpu().numpy().astype(np.float64),
        "step_size": res.step_size.cpu().numpy().astype(np.float64),
        "energy_trace": res.energy_trace.numpy().astype(np.float32),
        "mean_energy_trace": res.mean_energy_trace.numpy().astype(np.float64),
    }
    meta = {"version": CACHE_VERSION, "spec": spec, "hash": recipe.split_hash(split), "wall_time": res.wall_time,
            "torch": torch.__version__, "stats": _summary(arrays, recipe.burn_in, recipe.thin)}
    meta["stats"]["wall_time"] = res.wall_time
    return ReferenceData(arrays, meta)


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ReferenceCacheError(
            f"cannot write the particle reference cache in {folder} ({e}); set MOLDIFF_CACHE or pass cache_dir= "
            "to a writable folder") from e


def _write_cache(path: Path, data: ReferenceData) -> None:
    try:
        meta = write_npz_cache(path, data.arrays, data.meta, keys=_ARRAYS)
    except OSError as e:
        raise ReferenceCacheError(f"cannot write the particle reference cache {path}: {e}") from e
    data.meta = meta
    data.path = path


def _read_cache(path: Path, spec: dict[str, Any]) -> ReferenceData:
    """Load and verify a cache; raises ``ValueError``/``OSError``/``KeyError`` on anything wrong."""
    arrays, meta = read_npz_cache(path, _ARRAYS)
    if meta.get("version") != CACHE_VERSION:
        raise ValueError(f"cache version {meta.get('version')}, expected {CACHE_VERSION}")
    if meta.get("spec") != json.loads(json.dumps(spec)):
        raise ValueError("made by a different recipe")
    n, d = spec["system_params"]["n_particles"], spec["system_params"]["dim"]
    if arrays["samples"].shape != (spec["size"], n, d):
        raise ValueError(f"samples have shape {arrays['samples'].shape}, expected {(spec['size'], n, d)}")
    return ReferenceData(arrays, meta, path)


def _resolve(system_name: str, recipe: ReferenceRecipe | None) -> tuple[ParticleSystem, ReferenceRecipe]:
    system = get_system(system_name)
    if recipe is None:
        if system.name not in RECIPES:
            raise ValueError(f"no reference recipe for {system_name!r}; known: {sorted(RECIPES)}")
        recipe = RECIPES[system.name]
    elif get_system(recipe.system).name != system.name:
        raise ValueError(f"recipe is for {recipe.system!r}, not {system_name!r}")
    return system, recipe


def cache_path(system_name: str, split: str, *, cache_dir: str | Path | None = None,
               recipe: ReferenceRecipe | None = None) -> Path:
    """Where split ``split`` of ``system_name`` is cached."""
    system, recipe = _resolve(system_name, recipe)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / f"{system.name}_{split}_{recipe.split_hash(split)}.npz"


def load_reference(system_name: str, split: str, *, cache_dir: str | Path | None = None,
                   recipe: ReferenceRecipe | None = None, progress: bool = True) -> ReferenceData:
    """Split ``split`` of ``system_name`` from the cache, building it (and caching it) if needed.

    Args:
        cache_dir: the folder of the ``.npz`` files (default ``$MOLDIFF_CACHE/particles``).
        recipe: overrides ``RECIPES[system_name]`` (tests use tiny recipes).
    """
    system, recipe = _resolve(system_name, recipe)
    path = cache_path(system_name, split, cache_dir=cache_dir, recipe=recipe)
    spec = recipe.split_spec(split)
    if path.exists():
        try:
            return _read_cache(path, spec)
        except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as e:
            warnings.warn(f"particle reference cache {path} is unusable ({e}); rebuilding it", stacklevel=2)
    _check_writable(path.parent)  # before minutes of sampling, not after
    data = _build(system, recipe, split, progress)
    _write_cache(path, data)
    return data


def reference_samples(system_name: str, split: str, *, cache_dir: str | Path | None = None, n: int | None = None,
                      progress: bool = True, recipe: ReferenceRecipe | None = None) -> Tensor:
    """Reference configurations ``[N, n_particles, dim]`` float32 with zero centre of mass (the first ``n``
    if given: they spread over the chains).  Built once with the system's recipe and cached."""
    data = load_reference(system_name, split, cache_dir=cache_dir, recipe=recipe, progress=progress)
    x = data.samples
    if n is not None:
        if not 0 <= n <= len(x):
            raise ValueError(f"{system_name} {split} has {len(x)} reference samples; asked for {n}")
        x = x[:n]
    return torch.from_numpy(np.array(x, dtype=np.float32))


def reference_info(system_name: str, split: str, *, cache_dir: str | Path | None = None,
                   recipe: ReferenceRecipe | None = None, progress: bool = True) -> dict[str, Any]:
    """Statistics of a reference split (built if needed): ``n``, ``chains``, ``samples_per_chain``, ``burn_in``,
    ``thin``, ``acceptance`` (mean over chains, post burn-in; also min/max), ``mean_energy``, ``std_energy``,
    ``sem_energy`` (standard error from the spread of the independent chains' means), ``tau_int_steps`` (the
    energy's integrated autocorrelation time in MCMC steps, Sokal's window on the traced chains after burn-in),
    ``tau_int_kept`` (the same in kept samples), ``tau_batch_steps`` (from the variance of the chain means:
    ``K thin Var(chain means) / Var(E)``; catches slow tails the window misses), ``ess`` (``N thin / tau_batch``,
    at most N: effective number of independent energies), ``first_half_mean`` / ``second_half_mean`` / ``half_drift`` /
    ``half_drift_sem`` (equilibration check), ``wall_time`` (s), ``seed``, ``path``."""
    _, recipe = _resolve(system_name, recipe)
    data = load_reference(system_name, split, cache_dir=cache_dir, recipe=recipe, progress=progress)
    info = _summary(data.arrays, recipe.burn_in, recipe.thin)  # recomputed: cheap, and follows this code
    info.update(burn_in=recipe.burn_in, thin=recipe.thin, seed=recipe.seed(split), path=str(data.path),
                wall_time=float(data.meta["wall_time"]))
    return info


def distance_histogram(x: Tensor | np.ndarray, bins: int = 100, r_max: float | None = None,
                       chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Normalised histogram of all interatomic distances of ``x [B, n, d]``: ``(edges [bins + 1],
    density [bins])`` over ``[0, r_max]`` (default: the largest distance)."""
    x = torch.as_tensor(np.asarray(x) if isinstance(x, np.ndarray) else x).to(torch.float64)
    with torch.no_grad():
        r = torch.cat([pairwise_distances(c).flatten() for c in x.split(chunk)]).numpy()
    r_max = float(r.max()) if r_max is None else float(r_max)
    density, edges = np.histogram(r, bins=bins, range=(0.0, r_max), density=True)
    return edges, density


def sanity_figure(system_name: str, *, cache_dir: str | Path | None = None, recipe: ReferenceRecipe | None = None,
                  n_trace: int = 4, max_points: int = 20_000, axes: Any = None, progress: bool = True):
    """The sanity figure of a system's reference data: (a) energy traces of ``n_trace`` train chains and the
    all-chain mean, burn-in shaded; (b) energy histogram per split; (c) interatomic-distance histogram per
    split (at most ``max_points`` configurations each).  Draws into ``axes`` (3 matplotlib axes) if given,
    else into a new ``matplotlib.figure.Figure`` (no pyplot state).  Returns the figure."""
    from matplotlib.figure import Figure

    _, recipe = _resolve(system_name, recipe)
    if axes is None:
        fig = Figure(figsize=(13, 3.6), layout="constrained")
        axes = fig.subplots(1, 3)
    else:
        fig = axes[0].figure
    data = {s: load_reference(system_name, s, cache_dir=cache_dir, recipe=recipe, progress=progress) for s in SPLITS}
    tr = data["train"]
    trace, mean_trace = tr.arrays["energy_trace"], tr.arrays["mean_energy_trace"]
    stride = max(1, len(mean_trace) // 3000)  # plot at most ~3,000 points per line
    steps = np.arange(1, len(mean_trace) + 1)[::stride]
    ax = axes[0]
    for c in range(min(n_trace, len(trace))):
        ax.plot(steps, trace[c, ::stride], lw=0.4, alpha=0.7)
    ax.plot(steps, mean_trace[::stride], color="k", lw=1.2, label=f"mean of {tr.meta['stats']['chains']} chains")
    ax.axvspan(0, recipe.burn_in, color="0.85", zorder=0, label="burn-in")
    ax.set_xlabel("MALA step")
    ax.set_ylabel("energy / kT")
    ax.set_title(f"{system_name}: train energy traces")
    lo, hi = np.percentile(trace[:, recipe.burn_in:], [0.1, 99.9]) if len(trace) else (0, 1)
    pad = 0.5 * (hi - lo)
    ax.set_ylim(lo - pad, hi + pad)
    ax.legend(fontsize=7, loc="upper right")
    e_all = np.concatenate([d.energies for d in data.values()])
    e_range = tuple(np.percentile(e_all, [0.05, 99.95]))
    r_max = max(float(np.percentile(pairwise_distances(torch.from_numpy(d.samples[:2000]).double()).numpy(), 99.9))
                for d in data.values()) * 1.05
    for split, d in data.items():
        axes[1].hist(d.energies, bins=80, range=e_range, density=True, histtype="step",
                     label=f"{split} ({len(d.energies)})")
        edges, dens = distance_histogram(d.samples[:max_points], bins=120, r_max=r_max)
        axes[2].stairs(dens, edges, label=split)
    axes[1].set_xlabel("energy / kT")
    axes[1].set_title("energy per split")
    axes[1].legend(fontsize=7)
    axes[2].set_xlabel("interatomic distance")
    axes[2].set_title("distances per split")
    axes[2].legend(fontsize=7)
    return fig
