"""Structured logs: one JSON object a line, with the trace and span ids of the current span.

Every record becomes::

    {"ts": "2025-01-31T12:00:00.123Z", "level": "INFO", "logger": "sidecar.proxy",
     "msg": "breaker transition", "event": "transition", "upstream": "payments", ...,
     "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}

Fields passed with ``extra=`` are kept as top-level keys (they never overwrite the core keys
``ts``, ``level``, ``logger``, ``msg``, ``trace_id``, ``span_id``); an ``event`` field names what
happened (:data:`EVENT_START`, :data:`EVENT_TRANSITION`, ...) so logs can be filtered by kind.

Blocking rules: the data path must never wait for a disk or a pipe, and breaker transitions are
logged from inside a proxied call. :func:`configure_logging` therefore installs a
:class:`logging.handlers.QueueHandler` that formats the record *in the caller* (so the caller's
current span is the one whose ids are written) and hands the line to a bounded queue; one
background thread writes lines to the stream. When the queue is full, lines are dropped and
counted (:attr:`LogPipeline.dropped`), never waited for.

Example::

    from sidecar.telemetry.logging import configure_logging
    pipeline = configure_logging("INFO")
    logging.getLogger("sidecar").info("sidecar started", extra={"event": "start"})
    pipeline.close()   # flushes what is queued
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import queue
import sys
import threading
from datetime import UTC, datetime
from typing import IO, Any, Final

from opentelemetry import trace

from sidecar.balancer import Ejection, EndpointListener, EndpointsChange, Return
from sidecar.breaker import BreakerListener, ModeChange, State, Transition
from sidecar.telemetry._names import upstream_of

__all__ = [
    "DEFAULT_LOG_QUEUE_SIZE",
    "EVENT_CONFIG_APPLIED",
    "EVENT_ENDPOINTS_CHANGED",
    "EVENT_ENDPOINT_EJECTED",
    "EVENT_ENDPOINT_RETURNED",
    "EVENT_ERROR",
    "EVENT_MODE_CHANGE",
    "EVENT_RELOAD",
    "EVENT_SHUTDOWN",
    "EVENT_START",
    "EVENT_TRANSITION",
    "JsonFormatter",
    "LogPipeline",
    "LoggingBreakerListener",
    "LoggingEndpointListener",
    "configure_logging",
    "set_log_level",
]

# Values of the ``event`` field: what a line is about.
EVENT_START: Final = "start"
EVENT_CONFIG_APPLIED: Final = "config_applied"
EVENT_TRANSITION: Final = "transition"
EVENT_MODE_CHANGE: Final = "mode_change"
EVENT_ENDPOINT_EJECTED: Final = "endpoint_ejected"
EVENT_ENDPOINT_RETURNED: Final = "endpoint_returned"
EVENT_ENDPOINTS_CHANGED: Final = "endpoints_changed"
EVENT_RELOAD: Final = "reload"
EVENT_ERROR: Final = "error"
EVENT_SHUTDOWN: Final = "shutdown"

DEFAULT_LOG_QUEUE_SIZE: Final = 10_000
"""Lines waiting for the writer thread; beyond this, lines are dropped and counted."""

MAX_ADDRESSES_IN_MESSAGE: Final = 10
"""Addresses an endpoint-set line names in its ``msg``; the ``added``/``removed`` fields carry
them all."""

DEFAULT_LOG_CLOSE_TIMEOUT_S: Final = 5.0
"""How long closing waits for queued lines to be written (a stuck stderr must not hang exit)."""

_CORE_KEYS: Final = frozenset({"ts", "level", "logger", "msg", "trace_id", "span_id"})
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS: Final = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _json_default(value: object) -> object:
    """Make values json can't encode readable instead of failing the log call."""
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object on one line.

    Reads the current OpenTelemetry span (contextvars) of the thread/task that formats, so
    format in the caller: :class:`LogPipeline` does.
    """

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            out["trace_id"] = format(span_context.trace_id, "032x")
            out["span_id"] = format(span_context.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and key not in _CORE_KEYS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, default=_json_default, separators=(",", ":"))


class _DroppingQueueHandler(logging.handlers.QueueHandler):
    """A QueueHandler that formats in the caller and drops (counting) when the queue is full."""

    def __init__(self, log_queue: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(log_queue)
        self.dropped = 0
        self._dropped_lock = threading.Lock()

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # Format here, in the caller, so trace ids come from the caller's current span.
        line = self.format(record)
        prepared = logging.makeLogRecord({"msg": line, "levelno": record.levelno,
                                          "levelname": record.levelname, "name": record.name})
        return prepared

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            with self._dropped_lock:
                self.dropped += 1


class _Writer(logging.handlers.QueueListener):
    """The writer thread; stops with a bounded wait instead of QueueListener's unbounded one."""

    def stop_within(self, timeout_s: float) -> None:
        thread = self._thread
        if thread is None:
            return
        try:
            self.queue.put(self._sentinel, timeout=timeout_s)  # type: ignore[attr-defined]
        except queue.Full:
            return  # the writer is stuck; it is a daemon thread and dies with the process
        thread.join(timeout_s)
        self._thread = None


class LogPipeline:
    """The installed logging set-up: a non-blocking queue handler on the root logger and one
    writer thread. ``set_level`` applies a reloaded level; ``close`` flushes and uninstalls."""

    def __init__(self, level: str, stream: IO[str] | None = None,
                 queue_size: int = DEFAULT_LOG_QUEUE_SIZE,
                 close_timeout_s: float = DEFAULT_LOG_CLOSE_TIMEOUT_S) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self._queue: queue.Queue[logging.LogRecord] = queue.Queue(maxsize=queue_size)
        self.handler = _DroppingQueueHandler(self._queue)
        self.handler.setFormatter(JsonFormatter())
        writer = logging.StreamHandler(sys.stderr if stream is None else stream)
        writer.setFormatter(logging.Formatter("%(message)s"))
        self._close_timeout_s = close_timeout_s
        self._listener = _Writer(self._queue, writer)
        self._root = logging.getLogger()
        self._previous_level = self._root.level
        self.set_level(level)
        self._listener.start()
        self._root.addHandler(self.handler)

    @property
    def dropped(self) -> int:
        """Lines dropped because the writer could not keep up."""
        return self.handler.dropped

    def set_level(self, level: str) -> None:
        """Apply a level name (``DEBUG``, ``INFO``, ``WARNING``, ``ERROR``) to the root logger."""
        numeric = logging.getLevelNamesMapping().get(level.upper())
        if numeric is None:
            raise ValueError(f"logging.level: unknown level {level!r}")
        self._root.setLevel(numeric)

    def close(self) -> None:
        """Uninstall the handler, restore the root level and write every queued line.
        Idempotent."""
        if self.handler in self._root.handlers:
            self._root.removeHandler(self.handler)
            self._root.setLevel(self._previous_level)
            self._listener.stop_within(self._close_timeout_s)


_installed: LogPipeline | None = None
_installed_lock = threading.Lock()


def configure_logging(level: str, stream: IO[str] | None = None) -> LogPipeline:
    """Send every log record of the process as JSON lines to ``stream`` (default stderr).

    Replaces a pipeline installed by an earlier call (e.g. in tests), so calling it twice
    never doubles the lines.
    """
    global _installed
    with _installed_lock:
        if _installed is not None:
            _installed.close()
        _installed = LogPipeline(level, stream)
        return _installed


def set_log_level(level: str) -> None:
    """Apply a (reloaded) level to the installed pipeline, or to the root logger if none."""
    with _installed_lock:
        if _installed is not None:
            _installed.set_level(level)
            return
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"logging.level: unknown level {level!r}")
    logging.getLogger().setLevel(numeric)


class LoggingBreakerListener(BreakerListener):
    """Log every breaker state change (WARNING when a breaker opens, INFO otherwise) and mode
    change. Called synchronously inside the call that caused the change, so the line carries
    that call's trace id; it only enqueues (see the module docstring), never blocks."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger("sidecar.breaker")

    def on_transition(self, transition: Transition) -> None:
        snapshot = transition.snapshot
        level = logging.WARNING if transition.to_state is State.OPEN else logging.INFO
        self._logger.log(
            level,
            "breaker %s: %s -> %s (%s)",
            transition.breaker, transition.from_state.value, transition.to_state.value,
            transition.reason,
            extra={
                "event": EVENT_TRANSITION,
                "upstream": upstream_of(transition.breaker),
                "breaker": transition.breaker,
                "from_state": transition.from_state.value,
                "to_state": transition.to_state.value,
                "reason": transition.reason,
                "failure_rate": snapshot.failure_rate,
                "slow_call_rate": snapshot.slow_call_rate,
                "calls_in_window": snapshot.calls,
                "open_duration_s": transition.open_duration_s,
                "trip_streak": transition.trip_streak,
                "mode": transition.mode.value,
            },
        )

    def on_mode_change(self, change: ModeChange) -> None:
        self._logger.info(
            "breaker %s mode: %s -> %s (by %s)",
            change.breaker, change.from_mode.value, change.to_mode.value, change.source,
            extra={
                "event": EVENT_MODE_CHANGE,
                "upstream": upstream_of(change.breaker),
                "breaker": change.breaker,
                "from_mode": change.from_mode.value,
                "to_mode": change.to_mode.value,
                "source": change.source,
            },
        )


def _addresses(addresses: tuple[str, ...]) -> str:
    shown = ", ".join(addresses[:MAX_ADDRESSES_IN_MESSAGE])
    more = len(addresses) - MAX_ADDRESSES_IN_MESSAGE
    return f"{shown} and {more} more" if more > 0 else shown


class LoggingEndpointListener(EndpointListener):
    """Log every ejection (WARNING), return (INFO) and endpoint-set change (INFO; WARNING when
    the set is empty, since calls then fail fast) of a balancer, one line each::

        upstream payments: endpoint 10.0.0.7:50051 ejected for 30.0 s (5 consecutive
        failures, ejection 2 in a row)

    Called synchronously by the balancer in the task of the call that caused the record, so an
    ejection's line carries the trace id of the failing call; it only enqueues, never blocks.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger("sidecar.balancer")

    def on_ejected(self, ejection: Ejection) -> None:
        if ejection.reason == "failure_rate":
            why = f"failure rate {ejection.failure_rate:.0%} over {ejection.calls} calls"
        else:
            why = f"{ejection.consecutive_failures} consecutive failures"
        self._logger.warning(
            "upstream %s: endpoint %s ejected for %.1f s (%s, ejection %d in a row)",
            ejection.upstream, ejection.endpoint, ejection.ejection_s, why,
            ejection.ejections_in_a_row,
            extra={
                "event": EVENT_ENDPOINT_EJECTED,
                "upstream": ejection.upstream,
                "endpoint": ejection.endpoint,
                "reason": ejection.reason,
                "ejection_ms": round(ejection.ejection_s * 1000),
                "ejections_in_a_row": ejection.ejections_in_a_row,
                "consecutive_failures": ejection.consecutive_failures,
                "failure_rate": ejection.failure_rate,
                "calls": ejection.calls,
            },
        )

    def on_returned(self, returned: Return) -> None:
        self._logger.info(
            "upstream %s: endpoint %s back in service after %.1f s ejected",
            returned.upstream, returned.endpoint, returned.ejected_for_s,
            extra={
                "event": EVENT_ENDPOINT_RETURNED,
                "upstream": returned.upstream,
                "endpoint": returned.endpoint,
                "ejected_for_ms": round(returned.ejected_for_s * 1000),
            },
        )

    def on_endpoints_changed(self, change: EndpointsChange) -> None:
        parts = []
        if change.added:
            parts.append(f"added {_addresses(change.added)}")
        if change.removed:
            parts.append(f"removed {_addresses(change.removed)}")
        if not change.count:
            parts.append("no endpoints: calls fail fast with UNAVAILABLE")
        self._logger.log(
            logging.WARNING if change.count == 0 else logging.INFO,
            "upstream %s: %d endpoint%s (%s)%s",
            change.upstream, change.count, "" if change.count == 1 else "s", change.source,
            (": " + "; ".join(parts)) if parts else "",
            extra={
                "event": EVENT_ENDPOINTS_CHANGED,
                "upstream": change.upstream,
                "added": list(change.added),
                "removed": list(change.removed),
                "count": change.count,
                "source": change.source,
            },
        )
