"""``sidecar demo``: the whole system on one machine.

``sidecar demo --scripted`` runs the breaker alone on a simulated clock (no network).
"""

from __future__ import annotations

import argparse

from sidecar.demo._scripted import PHASES, Phase, run_scripted_demo

__all__ = ["PHASES", "Phase", "register", "run_scripted_demo"]


def _run(args: argparse.Namespace) -> int:
    run_scripted_demo(seed=args.seed)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sidecar demo``."""
    parser = subparsers.add_parser(
        "demo", help="watch the adaptive breaker through an outage and a recovery",
        description=__doc__,
    )
    parser.add_argument("--scripted", action="store_true",
                        help="the breaker alone on a simulated clock (no processes, ~1 s)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default: 7)")
    parser.set_defaults(func=_run)
