"""The one trainer: any task, CPU or CUDA, DDP under torchrun, EMA, warm-up, clipping, atomic
checkpoints with exact resume, non-finite steps skipped on the device, MLflow tracking on rank 0.

Exact resume: the batches and the noise of step ``k`` are pure functions of ``(seed, rank, k)`` (the
task's ``train_batches`` contract and a generator re-seeded every step), so ``k`` steps + resume + ``k``
steps gives the same parameters as ``2k`` steps.

A non-finite loss or gradient skips the step without a host synchronisation: the fused AdamW kernel
takes a ``found_inf`` flag (the mechanism AMP's GradScaler uses) and the EMA update is gated by the same
flag.  Skips are counted; ``train.max_nonfinite`` of them in a row abort with :class:`NonFiniteLossError`
(checked every step on CPU, every ``log_every`` steps on CUDA).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..progress import is_terminal, progress_bar

from ..config import ConfigError, ExperimentConfig, flatten, to_dict, to_yaml
from ..tasks import Task, get_task
from .checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from .distributed import DistInfo, any_rank, cleanup_distributed, init_distributed
from .ema import EMA
from .interrupts import Interrupts, TrainingInterrupted
from .lineage import Lineage, Segment
from .resume import apply_optimizer_settings, resume_changes
from .run_folder import RunFolder
from .threads import ThreadTuner, explicit_threads
from .tracking import Tracker, environment_info, make_tracker
from .warm_start import load_init, read_init

__all__ = ["train", "TrainResult", "NonFiniteLossError", "TrainingInterrupted", "step_seed", "log_evaluation"]


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class TrainResult:
    """What a training run leaves behind."""

    step: int
    run_dir: Path
    checkpoint: Path | None
    run_id: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    nonfinite_steps: int = 0
    seconds: float = 0.0
    model: nn.Module | None = field(default=None, repr=False)  #: the trained network (raw weights)
    ema_model: nn.Module | None = field(default=None, repr=False)  #: its EMA copy (used for evaluation)


def step_seed(seed: int, rank: int, step: int, stream: int = 0) -> int:
    """Seed of a generator at one training step (a pure function, so resume is exact): ``stream`` 0 is the
    trainer's noise, 1 a task's batch draws (independent streams from one run seed)."""
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729 + stream * 15_485_863 + 12_345) % (2**63 - 1)


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


def _make_optimizer(cfg: ExperimentConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    t = cfg.train
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay, fused=True)


def log_evaluation(tracker: Tracker, result, step: int) -> None:
    """Send a task's :class:`~moldiff.tasks.EvalResult` to the tracker and close its figures."""
    import matplotlib.pyplot as plt

    if result.metrics:
        tracker.log_metrics(result.metrics, step)
    for name, fig in result.figures.items():
        tracker.log_figure(fig, f"figures/step_{step:07d}/{name}.png")
        plt.close(fig)
    for name, path in result.files.items():
        tracker.log_artifact(path, f"files/step_{step:07d}")


def train(
    cfg: ExperimentConfig,
    *,
    resume: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    task: Task | None = None,
) -> TrainResult:
    """Train ``cfg`` (a task config).

    Args:
        resume: ``"auto"`` (the newest intact checkpoint of the run folder, if any, else a fresh start), a
            checkpoint path, or None (a fresh start).  A resumed run may change the keys in the config class's
            ``resume_mutable`` (steps, learning rate, logging, sampling, evaluation); other changes are refused.
        overwrite: a fresh start over a run folder that holds checkpoints deletes them (without it, refused).

    The run folder is locked for the whole run (a second live writer is refused).  SIGTERM or Ctrl-C stop after
    the current step, save a checkpoint, end the MLflow run as KILLED and raise :class:`TrainingInterrupted`.
    """
    if overwrite and resume is not None:
        raise ConfigError("--overwrite starts a run over from step 0; it cannot be combined with --resume")
    if resume is not None and str(resume) != "auto" and not Path(resume).is_file():
        raise CheckpointError(f"--resume: checkpoint not found: {resume}")
    info, device = init_distributed(cfg.train.device)
    try:
        folder = RunFolder(cfg.run_dir) if info.is_main else contextlib.nullcontext()
        with folder, Interrupts() as interrupts:
            return _train(cfg, info, device, resume, overwrite, progress, task, folder, interrupts)
    finally:
        cleanup_distributed()


def _restore(cfg, resume, overwrite, info, folder, device) -> tuple[Path | None, dict[str, Any] | None]:
    """The checkpoint to resume (path, state), or (None, None) for a fresh start (after clearing the folder)."""
    ckpt_dir = cfg.run_dir / "checkpoints"
    found = None
    if resume is not None and str(resume) == "auto":
        found = latest_checkpoint(ckpt_dir, map_location=device)
    elif resume is not None:
        found = (Path(resume), load_checkpoint(resume, map_location=device))
    if found is None:
        if info.is_main:
            folder.start_fresh(overwrite)
        return None, None
    path, state = found
    if state.get("task") != cfg.task:
        raise CheckpointError(f"{path}: checkpoint is for task {state.get('task')!r}, config is {cfg.task!r}")
    return path, state


def _train(cfg, info: DistInfo, device, resume, overwrite, progress, task, folder, interrupts) -> TrainResult:
    t0 = time.time()
    tc = cfg.train
    task = task or get_task(cfg.task)(cfg)
    ckpt_path, state = _restore(cfg, resume, overwrite, info, folder, device)
    changes = resume_changes(state["config"], cfg) if state is not None else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = task.build_model()
    init = None
    if state is None and tc.init:  # a warm start: the source's EMA weights, a fresh optimiser
        init = load_init(model, read_init(tc.init), cfg.task)
        if info.is_main:
            fresh = f"; initialised fresh: {', '.join(init.fresh)}" if init.fresh else ""
            tqdm.write(f"moldiff: warm start from {init.description}{fresh}")
    lineage = Lineage.from_dict(state.get("lineage")) if state is not None else (init.lineage if init else Lineage())
    model.to(device)
    ema = EMA(model, tc.ema_decay)
    opt = _make_optimizer(cfg, model, device)
    warm = max(tc.warmup_steps, 0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)

    ckpt_dir = cfg.run_dir / "checkpoints"
    step, run_id, nonfinite_total = 0, None, 0
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
        except RuntimeError as e:
            raise CheckpointError(f"{ckpt_path}: the weights do not fit the model built from the config "
                                  f"({str(e).splitlines()[0]})") from e
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        apply_optimizer_settings(cfg, opt, sched)
        step, run_id, nonfinite_total = int(state["step"]), state.get("run_id"), int(state.get("nonfinite_total", 0))
        del state

    train_model: nn.Module = model
    if tc.compile:
        train_model = torch.compile(train_model)
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(train_model, device_ids=[device] if device.type == "cuda" else None)

    tracker: Tracker = Tracker()
    generator = torch.Generator(device=device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if (device.type == "cuda" and tc.bf16) else contextlib.nullcontext()
    )
    zero = torch.zeros((), device=device)
    loss_sum, loss_n, consec, max_consec, skipped = zero.clone(), zero.clone(), zero.clone(), zero.clone(), zero.clone()
    check_every = 1 if device.type == "cpu" else tc.log_every
    max_norm = tc.grad_clip if tc.grad_clip > 0 else math.inf
    params = [p for p in model.parameters() if p.requires_grad]
    last_ckpt: Path | None = ckpt_path
    saved_step = step
    batch = probe = None  # probe: the first batch of this segment with a finite loss (checkpoint health check)
    metrics: dict[str, float] = {}
    status = "FAILED"
    bar = progress_bar(total=tc.steps, initial=step, enabled=progress and info.is_main, desc=f"train {cfg.name or cfg.task}")
    line_log = (step, time.monotonic()) if progress and info.is_main and not is_terminal() else None
    seg_start_step, seg_cpu, seg_wall, eval_cpu = step, time.process_time(), time.monotonic(), 0.0
    config_dict = to_dict(cfg)

    def lineage_now() -> Lineage:
        """The lineage with this invocation's steps so far (CPU time on a CPU device, GPU time on CUDA; under DDP
        rank 0's times the number of ranks)."""
        ranks = info.world_size
        on_gpu = device.type == "cuda"
        seg = Segment("", cfg.name or cfg.task, seg_start_step, step,
                      cpu_hours=0.0 if on_gpu else ranks * (time.process_time() - seg_cpu - eval_cpu) / 3600,
                      gpu_minutes=ranks * (time.monotonic() - seg_wall - eval_wall) / 60 if on_gpu else 0.0,
                      samples=(step - seg_start_step) * tc.batch_size * ranks, device=str(device),
                      init=init.description if init is not None and seg_start_step == 0 else "")
        return lineage.with_segment(seg, config_dict)

    eval_wall = 0.0

    def save() -> None:
        nonlocal last_ckpt, saved_step
        if not info.is_main:
            return
        problem = _health_problem(task, model, ema, probe, autocast, cfg.seed, step)
        if problem:
            tqdm.write(f"moldiff: step {step}: no checkpoint saved, {problem}; last good checkpoint: "
                       f"{last_ckpt or 'none'}")
            tracker.set_tags({f"unsaved_checkpoint.step_{step:08d}": problem})
            return
        last_ckpt = _save(cfg, ckpt_dir, model, ema, opt, sched, step, tracker, nonfinite_total + int(skipped.item()),
                          lineage_now(), task)
        saved_step = step

    threads_before = torch.get_num_threads()
    fixed = explicit_threads(tc.threads)
    if fixed is not None:
        torch.set_num_threads(fixed)
    tune = fixed is None and device.type == "cpu" and not info.enabled and threads_before > 1
    tuner = ThreadTuner((1, threads_before) if tune else (torch.get_num_threads(),))
    try:
        if info.is_main:
            tracker = make_tracker(cfg, run_id)
            _log_segment(tracker, cfg, device, info, step, changes, resumed=ckpt_path is not None)
        batches = task.train_batches(start_step=step, rank=info.rank, world_size=info.world_size, device=device)
        if step < tc.steps:  # the first batch builds or reads the data (a dataset simulated on first use): not training
            batches = itertools.chain([next(batches)], batches)  # time, so not on the clock of max_cpu_minutes either
        train_model.train()
        seg_cpu, seg_wall = time.process_time(), time.monotonic()  # training time starts here (lineage)
        deadline = time.monotonic() + 60 * tc.max_minutes if tc.max_minutes > 0 else math.inf
        cpu_deadline = time.process_time() + 60 * tc.max_cpu_minutes if tc.max_cpu_minutes > 0 else math.inf
        while step < tc.steps:
            # Signals are held for the whole iteration, up to the point where the ranks agree to stop: a rank that
            # raised elsewhere (loading the batch, the all-reduce) would leave the others waiting in DDP's
            # gradient all-reduce of the next step, and torchrun would kill them, rank 0's final save included.
            with interrupts.deferred():
                tuner.before_step()
                batch = next(batches)
                generator.manual_seed(step_seed(cfg.seed, info.rank, step))
                with autocast:
                    loss_vec = task.loss(train_model, batch, generator)
                loss = loss_vec.float().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                gnorm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
                ok = torch.isfinite(gnorm) if info.enabled else torch.isfinite(gnorm) & torch.isfinite(loss)
                bad = (~ok).float()
                opt.found_inf = bad  # fused AdamW skips the update (and its step count) when 1
                opt.step()
                sched.step()
                ema.update(model, gate=ok, step=step)
                if probe is None and info.is_main and bool(ok):  # one host sync, until a sane batch is found
                    probe = batch
                loss_sum += torch.where(ok, loss.detach(), zero)
                loss_n += ok.float()
                skipped += bad
                consec = (consec + 1) * bad
                max_consec = torch.maximum(max_consec, consec)
                step += 1
                bar.update(1)
                chosen = tuner.after_step()
                if chosen is not None and info.is_main and (len(tuner.history) == 1 or tuner.history[-2][1] != chosen):
                    times = ", ".join(f"{c} thread{'s' if c > 1 else ''} {t:.3g} s" for c, t in tuner.history[-1][2].items())
                    tqdm.write(f"moldiff: training on {chosen} CPU thread{'s' if chosen > 1 else ''} (median step: {times})")
                    tracker.set_tags({"threads": chosen, f"threads.step_{step:08d}": times})
                if step % check_every == 0 and max_consec.item() >= tc.max_nonfinite:
                    raise NonFiniteLossError(
                        f"{int(max_consec.item())} non-finite losses/gradients in a row at step {step} "
                        f"(train.max_nonfinite={tc.max_nonfinite}); last good checkpoint: "
                        f"{last_ckpt or 'none was saved'}. Lower train.lr, check the data for NaN/inf, or raise "
                        "train.grad_clip."
                    )
                if step % tc.log_every == 0 or step == tc.steps:
                    n = loss_n.item()
                    row = {"train/loss": loss_sum.item() / n if n else float("nan"), "train/lr": sched.get_last_lr()[0],
                           "train/grad_norm": float(gnorm), "train/nonfinite_steps": nonfinite_total + skipped.item()}
                    if info.is_main:
                        tracker.log_metrics(row, step)
                    bar.set_postfix(loss=f"{row['train/loss']:.4g}")
                    if line_log:  # a log file gets a line per log_every steps instead of a bar
                        rate = (step - line_log[0]) / max(time.monotonic() - line_log[1], 1e-9)
                        tqdm.write(f"moldiff: train {cfg.name or cfg.task}: step {step}/{tc.steps}, loss "
                                   f"{row['train/loss']:.4g}, {rate:.3g} steps/s", file=sys.stderr)
                        line_log = (step, time.monotonic())
                    loss_sum.zero_()
                    loss_n.zero_()
                if step % tc.ckpt_every == 0 or step == tc.steps:
                    save()
                stop = interrupts.signal is not None
                out_of_time = time.monotonic() > deadline or time.process_time() > cpu_deadline
                if info.enabled:  # all ranks stop after the same step, or the others would wait in an all-reduce
                    stop, out_of_time = any_rank((stop, out_of_time), device)
            if stop:
                raise TrainingInterrupted(interrupts.signal or signal.SIGTERM)
            if out_of_time:
                tqdm.write(f"moldiff: the time budget (train.max_minutes={tc.max_minutes:g}, max_cpu_minutes="
                           f"{tc.max_cpu_minutes:g}) ran out at step {step} of {tc.steps}")
                if info.is_main:
                    tracker.set_tags({"stopped_by_time_budget_at_step": step})
                break
            if tc.eval_every and step % tc.eval_every == 0 and step < tc.steps and info.is_main:
                # under DDP the other ranks wait for rank 0 in the next step: it stops after that step, with them
                c0, w0 = time.process_time(), time.monotonic()
                with interrupts.deferred() if info.enabled else contextlib.nullcontext():
                    log_evaluation(tracker, _evaluate(task, ema.model, cfg, progress), step)
                eval_cpu += time.process_time() - c0  # evaluation is not training time
                eval_wall += time.monotonic() - w0
        bar.close()
        if info.is_main:
            if saved_step != step or last_ckpt is None:
                save()
                if saved_step != step:
                    raise NonFiniteLossError(f"the weights at step {step} are not usable (see above); last good "
                                             f"checkpoint: {last_ckpt or 'none was saved'}")
            if tc.steps > 0 or ckpt_path is None:
                result = _evaluate(task, ema.model, cfg, progress)
                metrics = result.metrics
                log_evaluation(tracker, result, step)
            if cfg.tracking.log_checkpoints and last_ckpt is not None:
                tracker.log_artifact(last_ckpt, "checkpoints")
        status = "FINISHED"
    except (TrainingInterrupted, KeyboardInterrupt) as e:
        status = "KILLED"
        if step != saved_step:  # signals are held during a step, so the state here is between two steps
            save()
        signum = getattr(e, "signum", signal.SIGINT)
        raise TrainingInterrupted(signum, f"training stopped by {signal.Signals(signum).name} at step {step}; last "
                                  f"checkpoint: {last_ckpt or 'none'} (continue with --resume auto)") from None
    finally:
        bar.close()
        _finish(tracker, status)
        torch.set_num_threads(threads_before)
    return TrainResult(step=step, run_dir=cfg.run_dir, checkpoint=last_ckpt, run_id=tracker.run_id, metrics=metrics,
                       nonfinite_steps=nonfinite_total + int(skipped.item()), seconds=time.time() - t0,
                       model=model, ema_model=ema.model)


def _log_segment(tracker: Tracker, cfg, device, info, step: int, changes: dict, resumed: bool) -> None:
    """Params and config of a new run; on resume, the segment's start and its config changes as tags (MLflow
    params are immutable: they keep the values the run started with) and the config in force as an artifact."""
    tracker.log_params(flatten(to_dict(cfg)))
    tracker.set_tags({**environment_info(device, info.world_size), "task": cfg.task, "resumed_from_step": step})
    if not resumed:
        tracker.log_text(to_yaml(cfg), "config.yaml")
        return
    tracker.log_text(to_yaml(cfg), f"config_resumed_at_step_{step:08d}.yaml")
    if changes:
        text = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
        tracker.set_tags({f"resume.step_{step:08d}.changes": text})
        tqdm.write(f"moldiff: resuming at step {step} with {text}")


def _finish(tracker: Tracker, status: str) -> None:
    """End the tracked run; a store that cannot take the status is reported, not raised over the real error."""
    import sys

    try:
        tracker.finish(status)
    except Exception as e:  # noqa: BLE001
        print(f"moldiff: warning: could not mark the MLflow run {tracker.run_id} {status}: {e}", file=sys.stderr)


def _health_problem(task: Task, model: nn.Module, ema: EMA, batch, autocast, seed: int, step: int) -> str | None:
    """Why the current weights may not be saved as a checkpoint (None when they may): non-finite weights, or a
    non-finite loss of the raw or EMA network on ``batch``, a training batch that gave a finite loss (a probe
    forward pass; bad data cannot fail it)."""
    for name, net in (("weights", model), ("EMA weights", ema.model)):
        for key, t in net.state_dict().items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return f"non-finite {name} ({key})"
    if batch is None:
        return None
    device = next(model.parameters()).device
    for name, net in (("network", model), ("EMA network", ema.model)):
        gen = torch.Generator(device=device).manual_seed(step_seed(seed, 0, step) + 1)
        with torch.no_grad(), autocast:
            loss = task.loss(net, batch, gen)
        if not bool(torch.isfinite(loss).all()):
            return f"the {name}'s loss on a probe batch is not finite"
    return None


def _evaluate(task: Task, model: nn.Module, cfg: ExperimentConfig, progress: bool):
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 2**31)
    with torch.no_grad():
        return task.evaluate(model, generator=gen, progress=progress)


def _save(cfg, ckpt_dir, model, ema, opt, sched, step, tracker, nonfinite_total, lineage: Lineage, task: Task) -> Path:
    state: dict[str, Any] = {
        "model": _unwrap(model).state_dict(),
        "ema": ema.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "step": step,
        "task": cfg.task,
        "config": to_dict(cfg),
        "run_id": tracker.run_id,
        "nonfinite_total": nonfinite_total,
        "torch_version": str(torch.__version__),
        "lineage": lineage.to_dict(),
        "sampling": task.sampling_state(),
    }
    save_checkpoint(state, ckpt_dir / f"step_{step:08d}.pt")
    path = save_checkpoint(state, ckpt_dir / "last.pt")
    prune_checkpoints(ckpt_dir, cfg.train.keep_checkpoints)
    return path
