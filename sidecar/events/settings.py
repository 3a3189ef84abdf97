"""Settings of the event pipeline (recorder queue, outbox, shipper): every default in one place.

``sidecar.config`` reads its ``eventlog:`` defaults from here, so changing a default means
changing one line. Validated once at construction: a bad value raises ``ValueError`` naming the
field and the rule, e.g. ``batch_size: must be an integer >= 1, got 0``.

Stdlib and ``sidecar.breaker`` only, so the config module can import it cheaply.

Example::

    settings = EventsSettings(outbox_path="/var/lib/sidecar/outbox.db", outbox_max_events=50_000)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from sidecar.breaker import BreakerSettings

__all__ = ["DEFAULT_SHIPPER_BREAKER", "MAX_BATCH_SIZE", "EventsSettings"]

MAX_BATCH_SIZE: Final = 1_000
"""Most events one Append may carry: the event log's default per-request limit."""

DEFAULT_SHIPPER_BREAKER: Final = BreakerSettings(
    window_size=10,
    minimum_calls=5,
    failure_rate=0.5,
    slow_call_ms=30_000.0,  # an Append is never "slow" for the breaker; the RPC deadline rules
    slow_call_rate=1.0,
    consecutive_failures=3,
    half_open_probes=1,
    open_base_ms=1_000.0,
    open_multiplier=2.0,
    open_max_ms=30_000.0,
    open_jitter=0.2,
)
"""The shipper's own breaker: three failed Appends in a row stop the shipper from calling the
event log for 1 s, then 2 s, 4 s ... up to 30 s; one probe at a time finds out if it is back."""


def _int_at_least(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _finite_above(value: object, low: float, *, inclusive: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return value >= low if inclusive else value > low


@dataclass(frozen=True, slots=True)
class EventsSettings:
    """How breaker events travel from the breaker to the event log.

    Path of one event: breaker listener -> bounded in-memory queue (``queue_size``) -> writer
    thread -> SQLite outbox (``outbox_path``, at most ``outbox_max_events``) -> shipper thread
    -> ``EventLog.Append`` in batches of ``batch_size``.
    """

    outbox_path: str = "./sidecar-outbox.db"
    """SQLite file of the durable outbox (created when missing; WAL mode)."""
    queue_size: int = 10_000
    """Events waiting between the breaker listener and the writer thread. When full, new
    events are dropped and counted (``sidecar_events_dropped_total{reason="queue_full"}``):
    the data path never waits for the disk."""
    outbox_max_events: int = 100_000
    """Unshipped events the outbox holds at most (a few hundred bytes each). When reached, new
    events are refused and counted (``sidecar_events_dropped_total{reason="outbox_full"}``)
    with a loud log line; nothing already in the outbox is ever dropped, because dropping an
    older event would break the hash chain of every event after it."""
    outbox_keep_acked: int = 10_000
    """Acknowledged events the outbox keeps (oldest pruned beyond it, 0: none) so that, when the
    event log turns out to have been rolled back (restored from an older backup, a JetStream
    stream recreated), the shipper can ship them again (``sidecar_eventlog_rollbacks_total``)."""
    batch_size: int = 500
    """Events per ``Append`` call at most (and per outbox write transaction); at most
    ``MAX_BATCH_SIZE``."""
    linger_ms: float = 100.0
    """How long the shipper lets a partial batch fill before sending it (0: send at once), as
    OpenTelemetry's batch processor does: a storm of transitions costs a few large Appends
    instead of one per event. Bounds the extra delay of an event on its way to the log."""
    flush_interval_ms: float = 1_000.0
    """The shipper looks at the outbox at least this often; the writer also wakes it at once
    after each write, so this only bounds how late a missed wake-up is noticed."""
    append_timeout_ms: float = 5_000.0
    """Deadline of one ``Append`` (or head lookup) RPC."""
    backoff_base_ms: float = 200.0
    """First retry delay after a failed ``Append``; doubled (``backoff_multiplier``) per
    failure in a row, capped at ``backoff_max_ms``."""
    backoff_max_ms: float = 10_000.0
    """Cap of the retry delay; also caps the open time of the shipper's breaker and the gRPC
    channel's reconnect backoff, so a log that comes back is noticed within about this long."""
    backoff_multiplier: float = 2.0
    """Growth of the retry delay per failure in a row (>= 1)."""
    backoff_jitter: float = 0.5
    """Each delay is reduced by a random fraction up to this (0 <= x < 1), so sidecars that lost
    the log at the same moment do not retry in step."""
    shutdown_flush_timeout_ms: float = 5_000.0
    """How long a graceful stop spends shipping what is left (never more than the proxy's
    ``shutdown_grace_s``); whatever is not shipped stays in the outbox for the next start."""
    breaker: BreakerSettings = field(default=DEFAULT_SHIPPER_BREAKER)
    """The shipper's own circuit breaker around the event log."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not isinstance(self.outbox_path, str) or not self.outbox_path.strip():
            problems.append(f"outbox_path: must be a non-empty path, got {self.outbox_path!r}")
        for name in ("queue_size", "outbox_max_events", "batch_size"):
            value = getattr(self, name)
            if not _int_at_least(value, 1):
                problems.append(f"{name}: must be an integer >= 1, got {value!r}")
        for name in ("flush_interval_ms", "append_timeout_ms", "backoff_base_ms",
                     "backoff_max_ms", "shutdown_flush_timeout_ms"):
            value = getattr(self, name)
            if not _finite_above(value, 0.0):
                problems.append(f"{name}: must be a finite number > 0, got {value!r}")
        if not _int_at_least(self.outbox_keep_acked, 0):
            problems.append(
                f"outbox_keep_acked: must be an integer >= 0, got {self.outbox_keep_acked!r}")
        if not _finite_above(self.linger_ms, 0.0, inclusive=True):
            problems.append(f"linger_ms: must be a finite number >= 0, got {self.linger_ms!r}")
        if not _finite_above(self.backoff_multiplier, 1.0, inclusive=True):
            problems.append(
                f"backoff_multiplier: must be a finite number >= 1, got {self.backoff_multiplier!r}"
            )
        if not _finite_above(self.backoff_jitter, 0.0, inclusive=True) or self.backoff_jitter >= 1:
            problems.append(f"backoff_jitter: must be >= 0 and < 1, got {self.backoff_jitter!r}")
        if (_finite_above(self.backoff_base_ms, 0.0) and _finite_above(self.backoff_max_ms, 0.0)
                and self.backoff_max_ms < self.backoff_base_ms):
            problems.append(
                f"backoff_max_ms: must be >= backoff_base_ms ({self.backoff_base_ms:g}), "
                f"got {self.backoff_max_ms:g}"
            )
        if _int_at_least(self.batch_size, 1) and self.batch_size > MAX_BATCH_SIZE:
            problems.append(f"batch_size: must be <= {MAX_BATCH_SIZE} (the event log's limit "
                            f"per Append), got {self.batch_size}")
        if not isinstance(self.breaker, BreakerSettings):
            problems.append(f"breaker: must be a BreakerSettings, got {self.breaker!r}")
        if problems:
            raise ValueError("; ".join(problems))
