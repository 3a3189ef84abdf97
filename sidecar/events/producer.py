"""Breaker and endpoint changes become domain events: the producer end of the event pipeline.

:class:`EventRecorder` is a :class:`~sidecar.breaker.BreakerListener` and a
:class:`~sidecar.balancer.EndpointListener`. For every transition, mode change, endpoint
ejection, endpoint return, endpoint-set change and applied configuration it builds a typed
``events_pb2.Event`` (payload, ``event_id`` as a v7 UUID, ``occurred_at``, the trace id of the
call that caused it, the stream ``{service}/{instance}``) and offers it to an
:class:`EventQueue`. That is all it does on the data path.

Which call "caused" a record is the span current when the listener runs: breakers and
balancers call listeners synchronously in the causing call's task, so an ``EndpointEjected``
carries the trace id of the call whose failure tipped the endpoint over, an
``EndpointReturned`` the one of the call whose pick noticed the ejection time was up, and an
``EndpointsChanged`` from start or a discovery refresh none (empty).

It deliberately leaves ``version``, ``prev_hash`` and ``hash`` unset: those are assigned later
in exactly one place, the outbox (:meth:`sidecar.events.outbox.Outbox.append`), in the order
events reach it. Two calls tripping two breakers at the same instant therefore can never take
the same version or fork the hash chain, whatever order their listeners run in.

Blocking rules: ``on_transition`` / ``on_mode_change`` (and the ``on_ejected`` / ``on_returned``
/ ``on_endpoints_changed`` of the balancer) run synchronously in the task or thread of the call
that caused the change. They allocate one small message, take the queue's lock for
an append, and return. A full queue drops the event, counts it
(``sidecar_events_dropped_total{reason="queue_full"}``) and logs loudly (rate limited); it never
waits and never raises into the call.

Example::

    queue = EventQueue(maxsize=10_000)
    recorder = EventRecorder("checkout", "checkout-7d9f", queue)
    breaker.add_listener(recorder)
    balancer.add_listener(recorder)
    recorder.config_applied(config_digest(config), sorted(config.upstreams), "start")
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Final, Protocol

from opentelemetry import trace

from sidecar.balancer import Ejection, EndpointListener, EndpointsChange, Return
from sidecar.breaker import BreakerListener, ModeChange, Transition
from sidecar.breaker_protos import MODE_TO_PROTO, STATE_TO_PROTO, window_to_proto
from sidecar.ids import uuid7
from sidecar.loud import LoudLimiter
from sidecar.resilience import SheddingChange, SheddingListener
from sidecar.v1 import events_pb2

__all__ = [
    "TYPE_BREAKER_MODE_CHANGED",
    "TYPE_BREAKER_TRANSITIONED",
    "TYPE_CONFIG_APPLIED",
    "TYPE_ENDPOINTS_CHANGED",
    "TYPE_ENDPOINT_EJECTED",
    "TYPE_ENDPOINT_RETURNED",
    "EventQueue",
    "EventRecorder",
    "EventSink",
    "current_trace_id",
]

_log = logging.getLogger("sidecar.events")

TYPE_BREAKER_TRANSITIONED: Final = "BreakerTransitioned"
TYPE_BREAKER_MODE_CHANGED: Final = "BreakerModeChanged"
TYPE_CONFIG_APPLIED: Final = "ConfigApplied"
TYPE_ENDPOINTS_CHANGED: Final = "EndpointsChanged"
TYPE_ENDPOINT_EJECTED: Final = "EndpointEjected"
TYPE_ENDPOINT_RETURNED: Final = "EndpointReturned"
TYPE_LOAD_SHEDDING: Final = "LoadShedding"

_EJECTION_REASONS: Final = {
    "consecutive_failures": events_pb2.EJECTION_REASON_CONSECUTIVE_FAILURES,
    "failure_rate": events_pb2.EJECTION_REASON_FAILURE_RATE,
}


class EventSink(Protocol):
    """Where the recorder puts events. ``offer`` must never block and never raise."""

    def offer(self, event: events_pb2.Event) -> bool:
        """Take ``event`` if there is room; False (dropped, counted) otherwise."""
        ...


class EventQueue:
    """The bounded in-memory hand-off between the data path and the outbox writer thread.

    ``offer`` never blocks: when ``maxsize`` events are waiting, the new event is dropped,
    counted in :attr:`dropped` and reported by a rate-limited ERROR log line. Events are not
    yet numbered here, so a dropped event leaves no hole in the hash chain: the log simply
    never hears of that change (and the drop counter says so).

    Thread-safe; ``take`` is for the single writer thread.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize: must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._queue: queue.Queue[events_pb2.Event] = queue.Queue(maxsize)
        self._lock = threading.Lock()
        self._dropped = 0
        self._loud = LoudLimiter(_log, "domain events dropped: the event queue is full "
                                       "(the outbox writer is not keeping up)")

    @property
    def dropped(self) -> int:
        """Events refused because the queue was full, since start."""
        return self._dropped

    def depth(self) -> int:
        """Events waiting for the writer (approximate, for metrics)."""
        return self._queue.qsize()

    def offer(self, event: events_pb2.Event) -> bool:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            with self._lock:
                self._dropped += 1
            self._loud.hit(extra={"event": "events_dropped", "reason": "queue_full",
                                  "queue_size": self.maxsize})
            return False
        return True

    def take(self, max_events: int, timeout_s: float | None) -> list[events_pb2.Event]:
        """Up to ``max_events`` events in arrival order, waiting up to ``timeout_s`` for the
        first one (``None``: wait forever; 0: do not wait). Empty list on timeout."""
        try:
            if timeout_s is not None and timeout_s <= 0:
                first = self._queue.get_nowait()
            else:
                first = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < max_events:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch


def current_trace_id() -> str:
    """The trace id (32 lowercase hex) of the current OpenTelemetry span, or "" if none.

    Reads contextvars only, so it is the span of the proxied call when a breaker listener runs
    inside it (PROXY_HOOKS: breaker decisions happen inside the call's observer scope).
    """
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return ""
    return format(context.trace_id, "032x")


def _upstream_of(breaker: str) -> str:
    """Breaker names are ``upstream`` or, with ``per_method``, ``upstream/<method>``."""
    return breaker.split("/", 1)[0]


def _seconds_to_ns(at_wall: float) -> int:
    """Unix seconds (float) to nanoseconds without the float rounding of ``at_wall * 1e9``."""
    whole = math.floor(at_wall)
    return whole * 1_000_000_000 + round((at_wall - whole) * 1_000_000_000)


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


class EventRecorder(BreakerListener, EndpointListener, SheddingListener):
    """Turns breaker transitions, mode changes, endpoint ejections, returns and set changes,
    shedding periods of the adaptive limit, and applied configs into events on ``sink``.

    Attach one recorder to every breaker and every upstream's balancer of the sidecar (also the
    ones a reload creates: the events plugin registers it in ``ProxyPlugin.breaker_listeners``
    and ``endpoint_listeners``); call :meth:`config_applied` when the app starts and after each
    accepted reload. The event log learns which call caused a change from ``trace_id``.

    ``ids`` and ``wall_clock_ns`` are injectable for tests (``occurred_at`` of the breaker's and
    the balancer's records comes from their own wall clock, ``at_wall``).
    """

    def __init__(self, service: str, instance: str, sink: EventSink, *,
                 ids: Callable[[], str] = uuid7,
                 wall_clock_ns: Callable[[], int] = time.time_ns) -> None:
        if not service or not instance:
            raise ValueError("service and instance: must not be empty")
        self.service = service
        self.instance = instance
        self.stream = f"{service}/{instance}"
        self._sink = sink
        self._ids = ids
        self._wall_clock_ns = wall_clock_ns

    def _envelope(self, occurred_at_ns: int, trace_id: str) -> events_pb2.Event:
        event = events_pb2.Event(event_id=self._ids(), stream=self.stream, trace_id=trace_id)
        event.occurred_at.FromNanoseconds(occurred_at_ns)
        return event

    def on_transition(self, transition: Transition) -> None:
        """Called by the breaker in the causing call's context; only enqueues."""
        event = self._envelope(_seconds_to_ns(transition.at_wall), current_trace_id())
        event.type = TYPE_BREAKER_TRANSITIONED
        payload = event.breaker_transitioned
        payload.service = self.service
        payload.instance = self.instance
        payload.upstream = _upstream_of(transition.breaker)
        payload.breaker = transition.breaker
        payload.from_state = STATE_TO_PROTO[transition.from_state]
        payload.to_state = STATE_TO_PROTO[transition.to_state]
        payload.reason = transition.reason
        payload.window.CopyFrom(window_to_proto(transition.snapshot))
        payload.open_duration_ms = max(0, round(transition.open_duration_s * 1000))
        payload.trip_streak = max(0, transition.trip_streak)
        payload.mode = MODE_TO_PROTO[transition.mode]
        self._sink.offer(event)

    def on_mode_change(self, change: ModeChange) -> None:
        """Called by the breaker (admin or reload changed the mode); only enqueues."""
        event = self._envelope(_seconds_to_ns(change.at_wall), current_trace_id())
        event.type = TYPE_BREAKER_MODE_CHANGED
        payload = event.breaker_mode_changed
        payload.service = self.service
        payload.instance = self.instance
        payload.upstream = _upstream_of(change.breaker)
        payload.breaker = change.breaker
        payload.from_mode = MODE_TO_PROTO[change.from_mode]
        payload.to_mode = MODE_TO_PROTO[change.to_mode]
        payload.source = change.source
        self._sink.offer(event)

    def on_endpoints_changed(self, change: EndpointsChange) -> None:
        """Called by a balancer when its endpoint set changed (and for its first set); only
        enqueues."""
        event = self._envelope(_seconds_to_ns(change.at_wall), current_trace_id())
        event.type = TYPE_ENDPOINTS_CHANGED
        payload = event.endpoints_changed
        payload.service = self.service
        payload.instance = self.instance
        payload.upstream = change.upstream
        payload.added.extend(change.added)
        payload.removed.extend(change.removed)
        payload.count = max(0, change.count)
        payload.source = change.source
        self._sink.offer(event)

    def on_ejected(self, ejection: Ejection) -> None:
        """Called by a balancer inside the failing call that ejected an endpoint; only
        enqueues."""
        event = self._envelope(_seconds_to_ns(ejection.at_wall), current_trace_id())
        event.type = TYPE_ENDPOINT_EJECTED
        payload = event.endpoint_ejected
        payload.service = self.service
        payload.instance = self.instance
        payload.upstream = ejection.upstream
        payload.endpoint = ejection.endpoint
        payload.reason = _EJECTION_REASONS.get(ejection.reason,
                                               events_pb2.EJECTION_REASON_UNSPECIFIED)
        payload.ejection_ms = _ms(ejection.ejection_s)
        payload.ejections_in_a_row = max(0, ejection.ejections_in_a_row)
        payload.consecutive_failures = max(0, ejection.consecutive_failures)
        payload.failure_rate = ejection.failure_rate
        payload.calls = max(0, ejection.calls)
        self._sink.offer(event)

    def on_returned(self, returned: Return) -> None:
        """Called by a balancer when an ejected endpoint is back in service; only enqueues."""
        event = self._envelope(_seconds_to_ns(returned.at_wall), current_trace_id())
        event.type = TYPE_ENDPOINT_RETURNED
        payload = event.endpoint_returned
        payload.service = self.service
        payload.instance = self.instance
        payload.upstream = returned.upstream
        payload.endpoint = returned.endpoint
        payload.ejected_for_ms = _ms(returned.ejected_for_s)
        self._sink.offer(event)

    def on_shedding(self, change: SheddingChange) -> None:
        """Called by an adaptive limiter when a shedding period starts or stops; only
        enqueues (the limiter's hysteresis makes it one pair of events per overload)."""
        event = self._envelope(self._wall_clock_ns(), current_trace_id())
        event.type = TYPE_LOAD_SHEDDING
        payload = event.load_shedding
        payload.service = self.service
        payload.instance = self.instance
        payload.upstream = change.upstream
        payload.phase = change.phase
        payload.limit = max(1, change.limit)
        payload.in_flight = max(0, change.in_flight)
        payload.shed = max(0, change.shed)
        payload.algorithm = change.algorithm
        payload.duration_ms = _ms(change.duration_s) if change.phase == "stopped" else 0
        self._sink.offer(event)

    def config_applied(self, config_sha256: str, upstreams: Iterable[str], source: str) -> None:
        """The sidecar applied a configuration (``source`` "start" or "reload"); only enqueues.

        ``config_sha256`` is :func:`sidecar.config.config_digest` of the config in force.
        """
        event = self._envelope(self._wall_clock_ns(), current_trace_id())
        event.type = TYPE_CONFIG_APPLIED
        payload = event.config_applied
        payload.service = self.service
        payload.instance = self.instance
        payload.config_sha256 = config_sha256
        payload.upstreams.extend(sorted(upstreams))
        payload.source = source
        self._sink.offer(event)
