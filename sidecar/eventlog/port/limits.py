"""The bounds of the event store port: how much one read returns, what one event may hold.

Every adapter checks a read's ``limit`` with ``check_read_limit`` and an appended event with
``validate_new_event`` before storing it, so the stores refuse the same things; the server's
settings and the API's field checks take their defaults and ranges from here.

Pure functions, no I/O, safe from any thread.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

from sidecar import chain
from sidecar.eventlog.port.errors import InvalidEventError
from sidecar.eventlog.port.records import NewEvent

__all__ = [
    "DEFAULT_READ_LIMIT",
    "MAX_PAYLOAD_BYTES",
    "MAX_READ_LIMIT",
    "MAX_STREAM_CHARS",
    "MAX_TYPE_CHARS",
    "OCCURRED_AT_MAX_NS",
    "OCCURRED_AT_MIN_NS",
    "OCCURRED_AT_RANGE",
    "check_read_limit",
    "occurred_at_out_of_range",
    "validate_new_event",
]

MAX_READ_LIMIT: Final = 10_000
"""Largest ``limit`` a read accepts; adapters raise ``ValueError`` above it or below 1."""

DEFAULT_READ_LIMIT: Final = 1000
"""The ``limit`` of a read that names none."""


def check_read_limit(limit: int, name: str = "limit") -> None:
    """Adapters call this first in every read: limits outside 1..MAX_READ_LIMIT are a bug.
    ``name`` is the setting or argument the ``ValueError`` names (a page size, a read batch)."""
    if not 1 <= limit <= MAX_READ_LIMIT:
        raise ValueError(f"{name}: must be 1..{MAX_READ_LIMIT}, got {limit}")


MAX_STREAM_CHARS = 256
MAX_TYPE_CHARS = 128
MAX_PAYLOAD_BYTES = 64 * 1024
"""Bounds checked by ``validate_new_event`` (named here, the one place for their defaults)."""

OCCURRED_AT_MIN_NS: Final = 1
"""Earliest accepted ``occurred_at``: just after 1970-01-01T00:00:00Z.

Times at or before the Unix epoch are refused on purpose: events come from a running sidecar's
wall clock, and such a time means a clock that was never set (an RTC reset to 0); 0 also means
"unset" in the protobuf envelope and "unbounded" in ``EventFilter``."""
OCCURRED_AT_MAX_NS: Final = 2**63 - 1
"""Latest accepted ``occurred_at``: 2262-04-11T23:47:16.854775807Z, the largest signed 64-bit
nanosecond count (how the hash chain and both stores encode it)."""
OCCURRED_AT_RANGE: Final = (
    "must be after 1970-01-01T00:00:00Z and no later than 2262-04-11T23:47:16.854775807Z "
    "(signed 64-bit nanoseconds since the Unix epoch)"
)


def occurred_at_out_of_range(seconds: int, nanos: int) -> str:
    """The problem text for an ``occurred_at`` that is set but outside the accepted range,
    naming the value (and its calendar time when it has one)."""
    got = f"seconds={seconds} nanos={nanos}"
    try:
        moment = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        pass
    else:
        got += f" ({moment.replace(tzinfo=None).isoformat()}Z)"
    return f"{OCCURRED_AT_RANGE}, got {got}"


_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def validate_new_event(event: NewEvent) -> None:
    """Structural checks every adapter makes before storing; raises ``InvalidEventError``.

    Chain checks (version sequence, prev_hash, hash) need the stream head
    (``errors.check_chain``); this only checks what one event can tell about itself.
    """

    def bad(field: str, problem: str) -> InvalidEventError:
        return InvalidEventError(field, problem, event_id=event.event_id)

    if not _CANONICAL_UUID.fullmatch(event.event_id):
        raise bad("event_id", f"{event.event_id!r} is not a UUID in canonical lowercase form")
    if not event.stream or len(event.stream) > MAX_STREAM_CHARS:
        raise bad("stream", f"must be 1..{MAX_STREAM_CHARS} characters")
    if event.version < 1 or event.version >= 2**63:
        raise bad("version", f"must be >= 1 (got {event.version})")
    if not event.type or len(event.type) > MAX_TYPE_CHARS:
        raise bad("type", f"must be 1..{MAX_TYPE_CHARS} characters")
    if event.occurred_at_ns == 0:
        raise bad("occurred_at", "must be set (nanoseconds since the Unix epoch)")
    if not OCCURRED_AT_MIN_NS <= event.occurred_at_ns <= OCCURRED_AT_MAX_NS:
        raise bad("occurred_at", occurred_at_out_of_range(*divmod(event.occurred_at_ns, 10**9)))
    if event.trace_id and not _TRACE_ID.fullmatch(event.trace_id):
        raise bad("trace_id", "must be empty or 32 lowercase hex characters")
    if len(event.payload) > MAX_PAYLOAD_BYTES:
        raise bad("payload", f"{len(event.payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    for name, value in (("prev_hash", event.prev_hash), ("hash", event.hash)):
        if len(value) != chain.HASH_SIZE_BYTES:
            raise bad(name, f"must be {chain.HASH_SIZE_BYTES} bytes (got {len(value)})")
    if (event.service or event.instance) and event.stream != f"{event.service}/{event.instance}":
        raise bad(
            "stream",
            f"{event.stream!r} does not match the payload's service/instance "
            f"{event.service + '/' + event.instance!r}",
        )
