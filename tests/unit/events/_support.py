"""Fakes for the event pipeline's unit tests: a clock moved by hand, an in-memory event log
with the real log's append rules, and builders for breaker records and events."""

from __future__ import annotations

from collections.abc import Sequence

from sidecar import chain
from sidecar.breaker import Mode, State, Transition, WindowSnapshot
from sidecar.events.shipper import Acknowledgement, ExportError
from sidecar.v1 import events_pb2

SNAPSHOT = WindowSnapshot(calls=10, failures=6, slow_calls=1, failure_rate=0.6,
                          slow_call_rate=0.1, consecutive_failures=3)
STREAM = "checkout/pod-1"


class FakeClock:
    """Monotonic seconds that only move when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def transition(breaker: str = "payments", from_state: State = State.CLOSED,
               to_state: State = State.OPEN, reason: str = "failure_rate",
               at_wall: float = 1_700_000_000.25) -> Transition:
    return Transition(breaker=breaker, from_state=from_state, to_state=to_state, reason=reason,
                      snapshot=SNAPSHOT, open_duration_s=1.5, trip_streak=1, mode=Mode.ENFORCE,
                      at_monotonic=100.0, at_wall=at_wall)


_counter = 0


def new_event(stream: str = STREAM, event_id: str | None = None,
              occurred_at_ns: int = 1_700_000_000_000_000_000) -> events_pb2.Event:
    """An un-numbered event as the recorder makes it."""
    global _counter
    _counter += 1
    event = events_pb2.Event(event_id=event_id or f"00000000-0000-7000-8000-{_counter:012d}",
                             stream=stream, type="BreakerTransitioned")
    event.occurred_at.FromNanoseconds(occurred_at_ns)
    payload = event.breaker_transitioned
    payload.service, payload.instance = stream.split("/")
    payload.upstream = payload.breaker = "payments"
    payload.from_state = events_pb2.BREAKER_STATE_CLOSED
    payload.to_state = events_pb2.BREAKER_STATE_OPEN
    return event


def assert_chain(events: Sequence[events_pb2.Event], first_version: int = 1,
                 prev_hash: bytes = chain.GENESIS_HASH) -> None:
    """``events`` are versions first_version.. of one stream with an unbroken hash chain."""
    for offset, event in enumerate(events):
        assert event.version == first_version + offset, (event.version, first_version + offset)
        assert bytes(event.prev_hash) == prev_hash, f"prev_hash broken at {event.version}"
        assert bytes(event.hash) == chain.proto_hash(event), f"hash wrong at {event.version}"
        prev_hash = bytes(event.hash)


class FakeEventLog:
    """An in-memory EventExporter with the event log's rules (docs/eventlog.md): idempotent by
    event_id forever, a different event at an existing version or a broken chain is
    FAILED_PRECONDITION and the batch stores nothing. Switches: ``down`` (UNAVAILABLE),
    ``lose_answers`` (store, then fail with DEADLINE_EXCEEDED as if the answer was lost)."""

    def __init__(self) -> None:
        self.streams: dict[str, list[events_pb2.Event]] = {}
        self.by_id: dict[str, events_pb2.Event] = {}
        self.down = False
        self.lose_answers = 0
        self.append_calls = 0
        self.read_calls = 0
        self.closed = False

    def events(self, stream: str = STREAM) -> list[events_pb2.Event]:
        return list(self.streams.get(stream, []))

    def append(self, events: Sequence[events_pb2.Event],
               timeout_s: float) -> list[Acknowledgement]:
        self.append_calls += 1
        if self.down:
            raise ExportError("UNAVAILABLE", "connection refused")
        staged: dict[str, list[events_pb2.Event]] = {}
        acks = []
        for event in events:
            stored = self.by_id.get(event.event_id)
            if stored is not None:
                acks.append(Acknowledgement(event.event_id, stored.version, 0, True))
                continue
            stream = staged.setdefault(event.stream, list(self.streams.get(event.stream, [])))
            head_hash = bytes(stream[-1].hash) if stream else chain.GENESIS_HASH
            if event.version != len(stream) + 1 or bytes(event.prev_hash) != head_hash:
                raise ExportError("FAILED_PRECONDITION",
                                  f"{event.stream}: version {event.version} conflicts")
            if bytes(event.hash) != chain.proto_hash(event):
                raise ExportError("FAILED_PRECONDITION", "hash mismatch")
            copy = events_pb2.Event()
            copy.CopyFrom(event)
            stream.append(copy)
            acks.append(Acknowledgement(event.event_id, event.version, 0, False))
        for name, stream in staged.items():
            self.streams[name] = stream
            for event in stream:
                self.by_id[event.event_id] = event
        if self.lose_answers:
            self.lose_answers -= 1
            raise ExportError("DEADLINE_EXCEEDED", "answer lost")
        return acks

    def read_stream(self, stream: str, from_version: int, limit: int,
                    timeout_s: float) -> list[events_pb2.Event]:
        self.read_calls += 1
        if self.down:
            raise ExportError("UNAVAILABLE", "connection refused")
        start = max(1, from_version) - 1
        return self.streams.get(stream, [])[start:start + limit]

    def stream_anchor(self, stream: str, timeout_s: float) -> tuple[int, bytes]:
        self.read_calls += 1
        if self.down:
            raise ExportError("UNAVAILABLE", "connection refused")
        return 0, b""  # this fake log is never cut by retention

    def close(self) -> None:
        self.closed = True

    def seed(self, stream: str, count: int) -> None:
        """Another writer's ``count`` events at the head of ``stream``."""
        head = self.streams.get(stream, [])
        for _ in range(count):
            event = new_event(stream)
            event.version = len(head) + 1
            event.prev_hash = bytes(head[-1].hash) if head else chain.GENESIS_HASH
            event.hash = chain.proto_hash(event)
            head.append(event)
            self.by_id[event.event_id] = event
        self.streams[stream] = head
