"""``sidecar eventlog verify|heads|rebuild``: the offline tools, run against a store URL."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sidecar.eventlog import nats_auth
from sidecar.eventlog.cli_common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    REBUILD_PROG,
    VERIFY_PROG,
    fail,
    open_store_or_fail,
    store_failure,
)


def run_offline(prog: str, url: str, work: Callable[[Any], Any],
                 args: argparse.Namespace | None = None) -> tuple[Any, int | None]:
    """Open the store at ``url`` (which must exist), run ``await work(store)`` and close it.

    Returns (result, None), or (None, exit code) after printing one line: a store that cannot
    be opened or reached is exit 1, a malformed URL exit 2, Ctrl-C exit 130.
    """
    import asyncio

    from sidecar.eventlog.port import StoreError

    try:  # the --nats-* flags (TLS files, credential) of verify and rebuild
        auth = nats_auth.from_arguments(args) if args is not None else None
    except ValueError as exc:
        return None, fail(prog, str(exc), EXIT_USAGE)
    store = open_store_or_fail(prog, url, create=False, nats_auth=auth)
    if isinstance(store, int):
        return None, store

    async def run() -> Any:
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run()), None
    except StoreError as exc:
        return None, store_failure(prog, url, exc)
    except KeyboardInterrupt:
        return None, fail(prog, "interrupted", 130)


def verify_command(args: argparse.Namespace) -> int:
    from sidecar.eventlog.audit import verify

    if getattr(args, "against", None) is not None:
        return _verify_against(args)
    report, failed = run_offline(VERIFY_PROG, args.store, verify, args)
    if failed is not None:
        return failed
    print(report.summary())
    return EXIT_OK if report.ok else EXIT_FAILED


def _verify_against(args: argparse.Namespace) -> int:
    """``verify`` plus the heads saved in ``--against``: one line per stream the log lost."""
    from sidecar.eventlog.audit import verify
    from sidecar.eventlog.heads import check_against, parse_heads

    try:
        saved = parse_heads(Path(args.against).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return fail(VERIFY_PROG, f"--against {args.against}: {exc}", EXIT_USAGE)

    async def work(store: Any) -> tuple[Any, Any]:
        return await verify(store), await check_against(store, saved)

    result, failed = run_offline(VERIFY_PROG, args.store, work, args)
    if failed is not None:
        return failed
    report, breaks = result
    print(report.summary())
    for lost in breaks:
        print(f"{VERIFY_PROG}: {lost}")
    print(f"{len(saved)} saved heads checked, {len(breaks)} behind or changed")
    return EXIT_OK if report.ok and not breaks else EXIT_FAILED


def heads_command(args: argparse.Namespace) -> int:
    """Every stream's head as JSON lines on stdout (``> FILE`` for ``verify --against``)."""
    from sidecar.eventlog.heads import format_heads, read_heads

    heads, failed = run_offline("sidecar eventlog heads", args.store, read_heads, args)
    if failed is not None:
        return failed
    sys.stdout.write(format_heads(heads))
    return EXIT_OK


def rebuild_command(args: argparse.Namespace) -> int:
    import time

    from sidecar.eventlog.projections.follower import server_projections
    from sidecar.eventlog.projections.runner import rebuild

    async def work(store: Any) -> tuple[int, int, float, str]:
        started = time.perf_counter()
        runner = await rebuild(store, server_projections())
        start = runner.started_from
        origin = start.describe() if start is not None else "the start of the log"
        return runner.events_folded, runner.position, time.perf_counter() - started, origin

    result, failed = run_offline(REBUILD_PROG, args.store, work, args)
    if failed is not None:
        return failed
    folded, position, elapsed_s, origin = result
    rate = folded / elapsed_s if elapsed_s > 0 else 0.0
    print(
        f"rebuilt {len(server_projections())} projections from {origin} up to position "
        f"{position}: {folded} events in {elapsed_s:.2f}s ({rate:,.0f} events/s)"
    )
    return EXIT_OK
