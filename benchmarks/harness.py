"""What every benchmark shares: where results go, what machine they were measured on, and how they are written."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

__all__ = ["ROOT", "RESULTS", "cpu_name", "machine", "write_json"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str = "cpu") -> str:
    """One line naming the machine: the GPU when ``device`` is CUDA and one is present, else the CPU with its cores
    and torch's thread count; always the torch version."""
    if device != "cpu" and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    return (f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s), "
            f"torch {torch.__version__}")


def write_json(path: str | Path, data: Any) -> Path:
    """``data`` as indented JSON (the parent folder created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path
