"""Valid, chained ``LoadShedding`` and ``LogRollbackDetected`` events for the event log's tests,
made through a ``tests.support.events.StreamFactory`` like the endpoint events.

Example::

    producer = StreamFactory("checkout", "pod-1")
    started = load_shedding(producer, "payments", phase="started", shed=1)
    stopped = load_shedding(producer, "payments", phase="stopped", shed=420, duration_ms=3_000)
"""

from __future__ import annotations

from sidecar.eventlog.port import NewEvent
from sidecar.v1 import events_pb2
from tests.support.events import StreamFactory


def load_shedding(
    producer: StreamFactory,
    upstream: str = "payments",
    *,
    phase: str = "started",
    limit: int = 8,
    in_flight: int = 8,
    shed: int = 1,
    algorithm: str = "gradient2",
    duration_ms: int = 0,
    at_ns: int | None = None,
) -> NewEvent:
    """A ``LoadShedding`` period start (or, with ``phase="stopped"``, its end)."""
    payload = events_pb2.LoadShedding(
        service=producer.service, instance=producer.instance, upstream=upstream, phase=phase,
        limit=limit, in_flight=in_flight, shed=shed, algorithm=algorithm,
        duration_ms=duration_ms,
    )
    return producer.next(payload, at_ns=at_ns)


def log_rollback_detected(
    producer: StreamFactory,
    *,
    stream: str | None = None,
    acknowledged_version: int = 12,
    found_version: int = 7,
    reshipped: int = 5,
    reason: str = "head_behind",
    lost: int = 0,
    at_ns: int | None = None,
) -> NewEvent:
    """A ``LogRollbackDetected`` for the producer's own stream by default."""
    payload = events_pb2.LogRollbackDetected(
        service=producer.service, instance=producer.instance,
        stream=stream if stream is not None else f"{producer.service}/{producer.instance}",
        acknowledged_version=acknowledged_version, found_version=found_version,
        reshipped=reshipped, reason=reason, lost=lost,
    )
    return producer.next(payload, at_ns=at_ns)
