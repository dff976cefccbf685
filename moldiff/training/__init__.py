"""Trainer, checkpoints, DDP, EMA and tracking: knows nothing of chemistry or PDEs."""

from .checkpoint import CheckpointError, find_resume_checkpoint, load_checkpoint, save_checkpoint
from .distributed import DistInfo, init_distributed, resolve_device
from .ema import EMA
from .tracking import MLflowTracker, NullTracker, Tracker, make_tracker
from .trainer import NonFiniteLossError, TrainResult, train

__all__ = [name for name in dir() if not name.startswith("_")]
