"""argparse ``type=`` functions for number flags, shared by every ``sidecar`` subcommand.

``float`` itself accepts ``nan``, ``inf`` and ``1e999``; these refuse them, so a bad flag is
exit 2 with argparse's one line naming it, e.g.
``argument --heartbeat-interval-s: must be a finite number, got 'nan'``.

Example::

    parser.add_argument("--timeout-s", type=positive_finite_float, default=10.0)
"""

from __future__ import annotations

import argparse
import math

__all__ = ["finite_float", "non_negative_finite_float", "positive_finite_float"]


def finite_float(text: str) -> float:
    """A float that is neither NaN nor infinite (``1e999`` overflows to inf: refused too)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_finite_float(text: str) -> float:
    """A finite float > 0 (durations, deadlines, rates)."""
    value = finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def non_negative_finite_float(text: str) -> float:
    """A finite float >= 0 (grace periods, where 0 means "none")."""
    value = finite_float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value
