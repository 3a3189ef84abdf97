"""``sidecar demo``: the whole system on one machine, with no other setup.

A sample upstream goes through phases (healthy, brownout, outage, recovery); the sidecar
protects it with its breakers and ships every transition to the event log (embedded store in
a temporary folder; ``--data DIR`` keeps it); a load generator plays the host app. ``orders``
has three replicas balanced per call, one of which sickens for a while: it is ejected while
the others serve, comes back, is ejected again for longer, heals and stays; meanwhile retries
send each call it fails to another replica, so the host app sees no failure at all.
``catalog`` has a fixed capacity and gets a surge of three times it: the adaptive concurrency
limit sheds the excess at once instead of queueing it. A live view shows each breaker, the
orders replicas, retries and the limit (plain lines when not on a terminal). ``--duration``
bounds the run; Ctrl-C stops every process the demo started.

``sidecar demo --scripted`` runs the breaker alone on a simulated clock (no processes, ~1 s).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sidecar.cli_types import positive_finite_float
from sidecar.demo._scripted import PHASES, Phase, run_scripted_demo

__all__ = ["PHASES", "Phase", "register", "run_scripted_demo"]


def _run(args: argparse.Namespace) -> int:
    if args.scripted:
        run_scripted_demo(seed=args.seed)
        return 0
    from sidecar.demo._phases import CATALOG_LOADS, REPLICA_BEHAVIOURS, parse_schedule
    from sidecar.demo._system import DemoOptions, run_demo
    from sidecar.demo._view import LiveView, PlainView, View

    try:
        schedule = parse_schedule(args.phases)
        orders_schedule = parse_schedule(args.orders_phases, REPLICA_BEHAVIOURS,
                                         "--orders-phases")
        catalog_schedule = parse_schedule(args.catalog_phases, CATALOG_LOADS,
                                          "--catalog-phases")
    except ValueError as exc:
        print(f"sidecar demo: {exc}", file=sys.stderr)
        return 2
    options = DemoOptions(duration_s=args.duration, data_dir=args.data, schedule=schedule,
                          orders_schedule=orders_schedule, catalog_schedule=catalog_schedule,
                          payments_calls_per_s=args.rate)
    live = sys.stdout.isatty() and not args.plain

    def view() -> View:
        return LiveView() if live else PlainView()

    return run_demo(options, view)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sidecar demo``."""
    from sidecar.demo._phases import (
        DEFAULT_CATALOG_SCHEDULE,
        DEFAULT_REPLICA_SCHEDULE,
        DEFAULT_SCHEDULE,
        format_schedule,
    )
    from sidecar.demo._system import DEFAULT_PAYMENTS_CALLS_PER_S

    parser = subparsers.add_parser(
        "demo", help="run the whole system on this machine through an outage and a recovery",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=positive_finite_float, default=None, metavar="SECONDS",
                        help="stop after this long (default: run until Ctrl-C)")
    parser.add_argument("--data", type=Path, default=None, metavar="DIR",
                        help="keep the event log, outbox, configs and logs in DIR "
                             "(default: a temporary folder removed at exit)")
    parser.add_argument("--phases", default=format_schedule(DEFAULT_SCHEDULE),
                        metavar="NAME=SECONDS,...",
                        help="the payments schedule, repeating (default: %(default)s)")
    parser.add_argument("--orders-phases", default=format_schedule(DEFAULT_REPLICA_SCHEDULE),
                        metavar="NAME=SECONDS,...",
                        help="the sick orders replica's schedule (healthy, sick, healed), "
                             "repeating (default: %(default)s)")
    parser.add_argument("--catalog-phases", default=format_schedule(DEFAULT_CATALOG_SCHEDULE),
                        metavar="NAME=SECONDS,...",
                        help="the load offered to catalog (normal ~50 calls/s, surge ~480/s "
                             "against a capacity of ~160/s), repeating (default: %(default)s)")
    parser.add_argument("--rate", type=positive_finite_float, default=DEFAULT_PAYMENTS_CALLS_PER_S,
                        metavar="CALLS_PER_S",
                        help="calls per second to payments (default: %(default)s)")
    parser.add_argument("--plain", action="store_true",
                        help="print lines instead of the live view (the default off a terminal)")
    parser.add_argument("--scripted", action="store_true",
                        help="the breaker alone on a simulated clock (no processes, ~1 s)")
    parser.add_argument("--seed", type=int, default=7,
                        help="random seed of --scripted (default: 7)")
    parser.set_defaults(func=_run)
