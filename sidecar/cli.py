"""The ``sidecar`` command line.

Each concern registers its own subcommands (``register(subparsers)``) so that this module
stays a thin dispatcher and heavy imports happen only for the command that runs.

Exit status: 0 success, 1 a failed check (e.g. ``eventlog verify``), 2 bad usage or config.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import import_module

from sidecar import __version__

# Modules that contribute subcommands, each exposing register(subparsers) -> None.
_COMMAND_MODULES: tuple[str, ...] = (
    "sidecar.proxy.cli",
    "sidecar.eventlog.cli",
    "sidecar.demo",
    "sidecar.healthcheck",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="sidecar",
        description="Evergreen Sidecar: gRPC proxy with adaptive circuit breakers, "
        "OpenTelemetry tracing and an event-sourced breaker log.",
    )
    parser.add_argument("--version", action="version", version=f"sidecar {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        module = import_module(name)
        register: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None] = (
            module.register
        )
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sidecar`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
