"""Trainer, checkpoints, DDP, EMA and tracking: knows nothing of chemistry or PDEs."""

from .checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from .run_folder import RunFolder, RunFolderError
from .distributed import DistInfo, init_distributed, resolve_device
from .ema import EMA
from .tracking import MLflowTracker, NullTracker, Tracker, make_tracker
from .trainer import NonFiniteLossError, TrainResult, step_seed, train

__all__ = [name for name in dir() if not name.startswith("_")]
