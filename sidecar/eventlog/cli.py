"""Subcommands of this concern (registered by sidecar.cli)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this concern's subcommands (none yet)."""
