"""Build valid, hash-chained breaker events for tests (store contract, server, projections).

``StreamFactory`` plays one sidecar's producer: each call makes the next event of its stream
(version + 1, ``prev_hash`` = the previous hash, ``hash`` computed) without storing anything.
Its clock is deterministic: ``start_ns`` plus ``step_ns`` per event, or ``at_ns=`` per call.

Example::

    producer = StreamFactory("checkout", "pod-1")
    opened = producer.transition("payments", "CLOSED", "OPEN")
    closed = producer.transition("payments", "OPEN", "HALF_OPEN")
    await store.append([opened, closed])
    wire = to_proto(opened)          # events_pb2.Event for gRPC tests
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from sidecar import chain
from sidecar.eventlog.event_protos import PAYLOAD_KINDS, Payload, filter_columns, to_proto
from sidecar.eventlog.port import NewEvent
from sidecar.ids import Uuid7Generator
from sidecar.v1 import events_pb2

__all__ = ["DEFAULT_START_NS", "StreamFactory", "rehash", "to_proto"]

DEFAULT_START_NS = 1_700_000_000_000_000_000
DEFAULT_STEP_NS = 1_000_000_000
_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"

_STATES = {
    "CLOSED": events_pb2.BREAKER_STATE_CLOSED,
    "OPEN": events_pb2.BREAKER_STATE_OPEN,
    "HALF_OPEN": events_pb2.BREAKER_STATE_HALF_OPEN,
}
_MODES = {
    "enforce": events_pb2.BREAKER_MODE_ENFORCE,
    "metrics_only": events_pb2.BREAKER_MODE_METRICS_ONLY,
    "disabled": events_pb2.BREAKER_MODE_DISABLED,
    "forced_open": events_pb2.BREAKER_MODE_FORCED_OPEN,
}


def rehash(event: NewEvent, **changes: object) -> NewEvent:
    """A copy of ``event`` with ``changes`` applied and its ``hash`` recomputed to match."""
    changed = dataclasses.replace(event, **changes)  # type: ignore[arg-type]
    return dataclasses.replace(changed, hash=chain.hash_of(changed))


class StreamFactory:
    """The producer of one stream ``{service}/{instance}``: makes its next chained events."""

    def __init__(
        self,
        service: str = "checkout",
        instance: str = "pod-1",
        *,
        start_ns: int = DEFAULT_START_NS,
        step_ns: int = DEFAULT_STEP_NS,
        ids: Uuid7Generator | None = None,
    ) -> None:
        self.service = service
        self.instance = instance
        self.version = 0
        self.head_hash = chain.GENESIS_HASH
        self.now_ns = start_ns
        self._step_ns = step_ns
        self._ids = ids or Uuid7Generator()

    @property
    def stream(self) -> str:
        return f"{self.service}/{self.instance}"

    def next(self, payload: Payload, *, at_ns: int | None = None, trace_id: str = "") -> NewEvent:
        """The next event of this stream carrying ``payload``; advances the head."""
        event_type = type(payload).DESCRIPTOR.name
        assert event_type in PAYLOAD_KINDS, event_type
        self.now_ns = at_ns if at_ns is not None else self.now_ns + self._step_ns
        service, instance, upstream = filter_columns(payload)
        unsigned = NewEvent(
            event_id=self._ids(),
            stream=self.stream,
            version=self.version + 1,
            type=event_type,
            occurred_at_ns=self.now_ns,
            trace_id=trace_id,
            payload=payload.SerializeToString(deterministic=True),
            prev_hash=self.head_hash,
            hash=b"",
            service=service,
            instance=instance,
            upstream=upstream,
        )
        event = dataclasses.replace(unsigned, hash=chain.hash_of(unsigned))
        self.version = event.version
        self.head_hash = event.hash
        return event

    def transition(
        self,
        upstream: str = "payments",
        from_state: str = "CLOSED",
        to_state: str = "OPEN",
        *,
        at_ns: int | None = None,
        reason: str = "failure_rate",
        open_duration_ms: int = 0,
        trace_id: str = _TRACE_ID,
    ) -> NewEvent:
        """A ``BreakerTransitioned`` event (states by name: CLOSED, OPEN, HALF_OPEN)."""
        payload = events_pb2.BreakerTransitioned(
            service=self.service,
            instance=self.instance,
            upstream=upstream,
            breaker=upstream,
            from_state=_STATES[from_state],
            to_state=_STATES[to_state],
            reason=reason,
            open_duration_ms=open_duration_ms or (1000 if to_state == "OPEN" else 0),
            mode=events_pb2.BREAKER_MODE_ENFORCE,
        )
        payload.window.calls = 20
        payload.window.failures = 12
        payload.window.failure_rate = 0.6
        return self.next(payload, at_ns=at_ns, trace_id=trace_id)

    def mode_changed(
        self,
        upstream: str = "payments",
        from_mode: str = "enforce",
        to_mode: str = "metrics_only",
        *,
        at_ns: int | None = None,
        source: str = "admin",
    ) -> NewEvent:
        """A ``BreakerModeChanged`` event (modes by config name: enforce, metrics_only, ...)."""
        payload = events_pb2.BreakerModeChanged(
            service=self.service,
            instance=self.instance,
            upstream=upstream,
            breaker=upstream,
            from_mode=_MODES[from_mode],
            to_mode=_MODES[to_mode],
            source=source,
        )
        return self.next(payload, at_ns=at_ns)

    def config_applied(
        self,
        upstreams: Iterable[str] = ("payments",),
        *,
        source: str = "start",
        at_ns: int | None = None,
    ) -> NewEvent:
        """A ``ConfigApplied`` event (no upstream filter column: it names several)."""
        payload = events_pb2.ConfigApplied(
            service=self.service,
            instance=self.instance,
            config_sha256="ab" * 32,
            upstreams=list(upstreams),
            source=source,
        )
        return self.next(payload, at_ns=at_ns)

    def transitions(self, count: int, upstream: str = "payments") -> list[NewEvent]:
        """``count`` events cycling CLOSED -> OPEN -> HALF_OPEN -> CLOSED -> ... from CLOSED."""
        cycle = (("CLOSED", "OPEN"), ("OPEN", "HALF_OPEN"), ("HALF_OPEN", "CLOSED"))
        return [self.transition(upstream, *cycle[i % 3]) for i in range(count)]
