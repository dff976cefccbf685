"""Commands that tasks add to the ``moldiff`` command line.

The generic CLI (:mod:`moldiff.cli`) knows ``train``, ``sample``, ``eval`` (checkpoints) and ``config``; everything
that needs a domain -- scoring molecule files, assimilating observations, a benchmark protocol -- is a
:class:`TaskCommand` that a package registers in the ``moldiff.commands`` entry-point group, the way tasks
register in ``moldiff.tasks``::

    # pyproject.toml of the package that owns the task
    [project.entry-points."moldiff.commands"]
    assimilate = "physics.fields.commands:ASSIMILATE"

The object is loaded whenever the CLI builds its parser, so the module that defines it must import nothing heavy
at module level: put the work (and its imports) inside ``run``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Callable

__all__ = ["TaskCommand", "task_commands", "add_overrides", "BUILTIN_COMMANDS"]

BUILTIN_COMMANDS = ("train", "sample", "eval", "config")


@dataclass(frozen=True)
class TaskCommand:
    """A sub-command: ``moldiff NAME ...``.

    Attributes:
        name: the sub-command (must not be one of :data:`BUILTIN_COMMANDS`).
        help: one line for ``moldiff --help``.
        add_arguments: ``(parser) -> None``: declares the command's arguments.
        run: ``(args) -> exit code``: does the work.  Raise :class:`~moldiff.config.ConfigError`,
            ``ValueError``, ``FileNotFoundError`` ... for bad input; the CLI turns them into a message and exit 2.
        description: the longer text of ``moldiff NAME --help``.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str = ""


def task_commands() -> dict[str, TaskCommand]:
    """The registered commands by name (a broken or clashing registration raises, naming it)."""
    out: dict[str, TaskCommand] = {}
    for ep in entry_points(group="moldiff.commands"):
        cmd = ep.load()
        if not isinstance(cmd, TaskCommand):
            raise TypeError(f"entry point moldiff.commands:{ep.name} ({ep.value}) is not a moldiff TaskCommand")
        if cmd.name in BUILTIN_COMMANDS or cmd.name in out:
            raise ValueError(f"entry point moldiff.commands:{ep.name}: command {cmd.name!r} is already taken")
        out[cmd.name] = cmd
    return dict(sorted(out.items()))


def add_overrides(parser: argparse.ArgumentParser) -> None:
    """The ``--set KEY=VALUE`` option every config-reading command shares."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.lr=1e-4 (repeatable)")
