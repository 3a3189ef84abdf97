"""What the event log's subcommands share: exit codes, program names, one-line failures, the
store opener that turns store problems into them, and argparse types."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any, TypeAlias

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
SERVE_PROG = "sidecar eventlog serve"
VERIFY_PROG = "sidecar eventlog verify"
REBUILD_PROG = "sidecar eventlog rebuild"

EXIT_OK = 0
EXIT_FAILED = 1
"""A failed check, or a store / event log that cannot be reached or opened."""
EXIT_USAGE = 2
"""Bad usage or configuration (e.g. a malformed --store URL)."""

EXIT_STATUS_HELP = (
    "exit status: 0 ok; 1 a failed check or a store that cannot be reached or opened; "
    "2 bad usage (e.g. a malformed --store URL)"
)


def fail(prog: str, message: str, code: int) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def timestamp_ns(value: str) -> int:
    """argparse type: an ISO 8601 time (``2025-01-31T12:00:00Z``) → nanoseconds since epoch."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r} has no time zone (add Z or +00:00)")
    return int(moment.timestamp() * 1_000_000) * 1000


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def store_failure(prog: str, url: str, exc: Exception) -> int:
    """One line naming the store and its problem (credentials in URLs masked); exit 1."""
    import re

    problem = str(exc)
    subject, sep, rest = problem.partition(": ")
    if sep and subject in url:  # "/var/x.db: does not exist": the URL names it already
        problem = rest
    line = " ".join(f"store {url}: {problem}".split())  # one line, whatever the message holds
    return fail(prog, re.sub(r"(?<=[/,])[^/,@\s]+@", "***@", line), EXIT_FAILED)


def open_store_or_fail(prog: str, url: str, *, create: bool,
                        nats_auth: object | None = None) -> Any:
    """The store for ``url``, or an exit code after printing the problem (2: a malformed URL;
    1: a SQLite file that cannot be opened, or is missing when ``create`` is false)."""
    from sidecar.eventlog.port import StoreError, open_store

    try:
        return open_store(url, create=create, nats_auth=nats_auth)
    except StoreError as exc:
        return store_failure(prog, url, exc)
    except ValueError as exc:
        return fail(prog, str(exc), EXIT_USAGE)
