"""The demo reads its own history back from the event log: every event of its service, by
Subscribe, turned into the lines the views print.

A ``BreakerTransitioned`` event becomes a :class:`~sidecar.demo._view.TransitionLine`;
``EndpointEjected`` / ``EndpointReturned`` go to the :class:`EndpointWatch`, which makes their
lines; ``LoadShedding`` (an adaptive limit started or stopped shedding) goes to the
:class:`SheddingWatch`. The subscription is re-opened (from the last position seen) when
the log is not there yet or goes away.

Runs on the demo's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from sidecar.demo._endpoints_view import EndpointWatch
from sidecar.demo._shedding_view import SheddingWatch
from sidecar.demo._view import TransitionLine, View

SUBSCRIBE_RETRY_S: Final = 1.0
LOG_DRAIN_S: Final = 0.5
"""After the load stops, how long the demo keeps reading the event log before it stops."""


def state_name(value: int) -> str:
    from sidecar.breaker_protos import state_name as proto_state_name

    return proto_state_name(value)


@dataclass
class Tally:
    """What the demo read back from the log, for the summary."""

    transitions: list[TransitionLine] = field(default_factory=list)
    events_total: int = 0
    events_by_upstream: dict[str, int] = field(default_factory=dict)
    last_position: int = 0


class LogFollower:
    """Follows the event log for ``service`` and hands every line to ``view``.

    ``phase_of(elapsed_s)`` names the payments phase a transition happened in; elapsed times
    count from ``started_at_wall`` (UNIX seconds). Without ``shedding``, ``LoadShedding``
    events are only counted.
    """

    def __init__(self, address: str, service: str, view: View, watch: EndpointWatch,
                 phase_of: Callable[[float], str], started_at_wall: float,
                 tally: Tally | None = None, shedding: SheddingWatch | None = None) -> None:
        self._address = address
        self._service = service
        self._view = view
        self._watch = watch
        self._phase_of = phase_of
        self._started_at_wall = started_at_wall
        self.tally = tally or Tally()
        self._shedding = shedding

    def transition_line(self, event: Any) -> TransitionLine:
        payload = event.breaker_transitioned
        occurred = event.occurred_at.seconds + event.occurred_at.nanos / 1e9
        elapsed = max(0.0, occurred - self._started_at_wall)
        return TransitionLine(
            elapsed_s=elapsed, phase=self._phase_of(elapsed),
            upstream=payload.upstream or payload.breaker,
            from_state=state_name(payload.from_state), to_state=state_name(payload.to_state),
            reason=payload.reason, failure_rate=payload.window.failure_rate,
            slow_call_rate=payload.window.slow_call_rate,
            open_duration_s=payload.open_duration_ms / 1000.0, trip_streak=payload.trip_streak,
            position=event.global_position, trace_id=event.trace_id,
        )

    def _count(self, upstream: str) -> None:
        by_upstream = self.tally.events_by_upstream
        by_upstream[upstream] = by_upstream.get(upstream, 0) + 1

    def handle(self, event: Any) -> None:
        """One event read back from the log."""
        tally = self.tally
        tally.last_position = event.global_position
        tally.events_total += 1
        which = event.WhichOneof("payload")
        if which == "breaker_transitioned":
            line = self.transition_line(event)
            self._count(line.upstream)
            tally.transitions.append(line)
            self._view.transition(line)
            return
        if which == "load_shedding":
            shed_line = self._shedding.from_log(event) if self._shedding else None
            if shed_line is not None:
                self._count(shed_line.upstream)
                self._view.note(shed_line)
            return
        endpoint_line = self._watch.from_log(event)
        if endpoint_line is not None:
            self._count(endpoint_line.upstream)
            self._view.endpoint(endpoint_line)

    async def follow(self, stop: asyncio.Event) -> None:
        """Read every event of the service back from the event log (Subscribe) until
        cancelled; retry while the log cannot be reached."""
        import grpc

        from sidecar.v1 import eventlog_pb2, eventlog_pb2_grpc

        while not stop.is_set():
            try:
                async with grpc.aio.insecure_channel(self._address) as channel:
                    stub = eventlog_pb2_grpc.EventLogStub(channel)  # type: ignore[no-untyped-call]
                    call = stub.Subscribe(eventlog_pb2.SubscribeRequest(
                        from_position=self.tally.last_position + 1,
                        filter=eventlog_pb2.EventFilter(service=self._service),
                        heartbeat_interval_ms=1000))
                    async for message in call:
                        if message.WhichOneof("message") == "event":
                            self.handle(message.event)
            except grpc.aio.AioRpcError:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), SUBSCRIBE_RETRY_S)


async def drain(follow_task: asyncio.Task[None]) -> None:
    """Give the last events time to travel sidecar -> outbox -> log -> here, then stop
    following the log (its stream never ends by itself)."""
    await asyncio.sleep(LOG_DRAIN_S)
    follow_task.cancel()
    await asyncio.gather(follow_task, return_exceptions=True)
