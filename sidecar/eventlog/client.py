"""Client-side helpers for the event log API: channels (TLS, token), output formats, paging.

Used by ``sidecar events query`` / ``sidecar events tail`` and by tests and benchmarks. Blocking
(grpc's synchronous API): call from a thread or a CLI, never from an event loop.

Example::

    with connect("127.0.0.1:7070") as log:
        for event in log.query(EventQuery(service="checkout"), limit=100):
            print(json.dumps(event_to_json(event)))
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.json_format import MessageToDict

from sidecar.dial import ClientTls
from sidecar.eventlog.api.auth import bearer_metadata
from sidecar.eventlog.enums import (
    breaker_mode_label,
    breaker_state_label,
    enum_label,
    unknown_label,
)
from sidecar.eventlog.settings import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_READ_LIMIT,
    RESUME_METADATA_KEY,
)
from sidecar.v1 import eventlog_pb2, eventlog_pb2_grpc, events_pb2

DEFAULT_TIMEOUT_S: Final = 10.0
"""Deadline of one unary call from the CLI (and of connecting before it)."""

TABLE_LIST_ITEMS: Final = 3
"""Endpoints of an EndpointsChanged a table row names before "(+N more)"."""


class EventLogUnreachable(Exception):
    """The event log did not answer (not running, wrong address, TLS mismatch)."""


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters of ``sidecar events query`` (empty = any)."""

    service: str = ""
    instance: str = ""
    upstream: str = ""
    types: tuple[str, ...] = ()
    from_time_ns: int = 0
    to_time_ns: int = 0

    def to_proto(self) -> eventlog_pb2.EventFilter:
        flt = eventlog_pb2.EventFilter(
            service=self.service,
            instance=self.instance,
            upstream=self.upstream,
            types=list(self.types),
        )
        if self.from_time_ns:
            flt.from_time.FromNanoseconds(self.from_time_ns)
        if self.to_time_ns:
            flt.to_time.FromNanoseconds(self.to_time_ns)
        return flt


@dataclass
class EventLogClient:
    """A connection to one event log server (see :func:`connect`)."""

    address: str
    channel: grpc.Channel
    stub: eventlog_pb2_grpc.EventLogStub
    metadata: list[tuple[str, str]] = field(default_factory=list)
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __enter__(self) -> EventLogClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.channel.close()

    def _unary(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout_s, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise _translate(exc, self.address) from None

    def read_page(
        self, query: EventQuery, from_position: int, limit: int
    ) -> eventlog_pb2.ReadAllResponse:
        request = eventlog_pb2.ReadAllRequest(
            from_position=from_position, limit=limit, filter=query.to_proto()
        )
        response: eventlog_pb2.ReadAllResponse = self._unary(self.stub.ReadAll, request)
        return response

    def query(
        self,
        query: EventQuery,
        *,
        from_position: int = 1,
        limit: int | None = None,
        page_events: int = DEFAULT_READ_LIMIT,
    ) -> Iterator[events_pb2.Event]:
        """Matching events from ``from_position`` up to the head seen by the first page, at
        most ``limit`` of them, page by page."""
        position, sent, stop_at = max(from_position, 1), 0, 0
        while limit is None or sent < limit:
            want = page_events if limit is None else min(page_events, limit - sent)
            page = self.read_page(query, position, want)
            stop_at = stop_at or page.head_position
            for event in page.events:
                if event.global_position > stop_at:
                    return
                yield event
                sent += 1
            if page.next_position <= position or page.next_position > stop_at:
                return
            position = page.next_position

    def subscribe(
        self, query: EventQuery, from_position: int, heartbeat_interval_ms: int = 0
    ) -> Any:
        """The raw Subscribe call (an iterator of ``SubscribeResponse``; cancel() to stop)."""
        request = eventlog_pb2.SubscribeRequest(
            from_position=from_position,
            filter=query.to_proto(),
            heartbeat_interval_ms=heartbeat_interval_ms,
        )
        return self.stub.Subscribe(request, metadata=self.metadata)

    def head_position(self) -> int:
        page = self.read_page(EventQuery(), 1 << 62, 1)
        return int(page.head_position)


def connect(
    address: str,
    *,
    token: str | None = None,
    tls: ClientTls | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> EventLogClient:
    """A client for the event log at ``address`` (HOST:PORT); connects lazily."""
    options: list[tuple[str, int | str]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]
    if tls is None:
        channel = grpc.insecure_channel(address, options=options)
    else:
        if tls.server_name is not None:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        channel = grpc.secure_channel(address, tls.credentials(), options=options)
    return EventLogClient(
        address=address,
        channel=channel,
        stub=eventlog_pb2_grpc.EventLogStub(channel),  # type: ignore[no-untyped-call]
        metadata=bearer_metadata(token),
        timeout_s=timeout_s,
    )


def _translate(exc: grpc.RpcError, address: str) -> Exception:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return EventLogUnreachable(f"cannot reach the event log at {address}: {details}")
    error: Exception = exc
    return error


def resume_position_of(exc: grpc.RpcError) -> int | None:
    """The position a Subscribe ended with RESOURCE_EXHAUSTED says to resume from."""
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == RESUME_METADATA_KEY:
            return int(value)
    return None


# --- output --------------------------------------------------------------------------------------


def _rfc3339(ts: Any) -> str:
    ns = int(ts.seconds) * 1_000_000_000 + int(ts.nanos)
    moment = datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ns % 1_000_000_000:09d}Z"


def _label_unknown_enums(descriptor: Descriptor, data: dict[str, Any]) -> None:
    """Replace, in ``MessageToDict`` output, each enum value the proto does not define (which
    it leaves a bare number) by ``"UNKNOWN(n)"``: every enum in the output is then a string."""

    def label(value: Any) -> Any:
        return unknown_label(value) if isinstance(value, int) else value

    for fd in descriptor.fields:
        if fd.name not in data:
            continue
        value = data[fd.name]
        if fd.type == FieldDescriptor.TYPE_ENUM:
            data[fd.name] = [label(v) for v in value] if fd.is_repeated else label(value)
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            target = fd.message_type
            if target.GetOptions().map_entry:
                value_fd = target.fields_by_name["value"]
                for key, item in value.items():
                    if value_fd.type == FieldDescriptor.TYPE_ENUM:
                        value[key] = label(item)
                    elif value_fd.type == FieldDescriptor.TYPE_MESSAGE:
                        _label_unknown_enums(value_fd.message_type, item)
            elif fd.is_repeated:
                for item in value:
                    _label_unknown_enums(target, item)
            else:
                _label_unknown_enums(target, value)


def event_to_json(event: events_pb2.Event) -> dict[str, Any]:
    """One event as a JSON-ready dict (hashes as hex, times as RFC 3339 UTC, enums by name,
    ``"UNKNOWN(n)"`` for a value the proto does not define)."""
    which = event.WhichOneof("payload")
    payload: dict[str, Any] = {}
    if which:
        message = getattr(event, which)
        payload = MessageToDict(message, preserving_proto_field_name=True)
        _label_unknown_enums(message.DESCRIPTOR, payload)
    return {
        "global_position": event.global_position,
        "event_id": event.event_id,
        "stream": event.stream,
        "version": event.version,
        "type": event.type,
        "occurred_at": _rfc3339(event.occurred_at),
        "recorded_at": _rfc3339(event.recorded_at),
        "trace_id": event.trace_id,
        "payload": payload,
        "prev_hash": event.prev_hash.hex(),
        "hash": event.hash.hex(),
    }


def json_line(event: events_pb2.Event) -> str:
    return json.dumps(event_to_json(event), sort_keys=True, separators=(",", ":"))


TABLE_HEADER: Final = (
    f"{'POSITION':>9}  {'OCCURRED_AT':<30}  {'STREAM':<28}  {'VER':>5}  {'TYPE':<20}  DETAIL"
)


def _state(value: int) -> str:
    if value == events_pb2.BREAKER_STATE_UNSPECIFIED:
        return "?"
    return breaker_state_label(value)


def _mode(value: int) -> str:
    return breaker_mode_label(value)


def _reason(value: int) -> str:
    """``consecutive_failures``, ``failure_rate`` (as the config names them), ``UNKNOWN(n)``."""
    label = enum_label(events_pb2.EjectionReason.DESCRIPTOR, value, "EJECTION_REASON_")
    return label if label.startswith("UNKNOWN(") else label.lower()


def _endpoint_list(sign: str, endpoints: Any) -> list[str]:
    shown = [f"{sign}{e}" for e in endpoints[:TABLE_LIST_ITEMS]]
    if len(endpoints) > TABLE_LIST_ITEMS:
        shown.append(f"{sign}{len(endpoints) - TABLE_LIST_ITEMS} more")
    return shown


def _ejection(p: events_pb2.EndpointEjected) -> str:
    reason = _reason(p.reason)
    if p.reason == events_pb2.EJECTION_REASON_CONSECUTIVE_FAILURES:
        why = f"{reason}: {p.consecutive_failures}"
    elif p.reason == events_pb2.EJECTION_REASON_FAILURE_RATE:
        why = f"{reason}: {p.failure_rate:.0%} of {p.calls} calls"
    else:
        why = (f"{reason}: {p.consecutive_failures} failures in a row, {p.failure_rate:.0%} "
               f"of {p.calls} calls")
    return (f"{p.upstream}: {p.endpoint} ejected for {p.ejection_ms} ms ({why}; "
            f"{p.ejections_in_a_row} in a row)")


def _detail(event: events_pb2.Event) -> str:
    which = event.WhichOneof("payload")
    if which == "breaker_transitioned":
        p = event.breaker_transitioned
        return f"{p.upstream}: {_state(p.from_state)} -> {_state(p.to_state)} ({p.reason})"
    if which == "breaker_mode_changed":
        m = event.breaker_mode_changed
        return f"{m.upstream}: mode {_mode(m.from_mode)} -> {_mode(m.to_mode)} ({m.source})"
    if which == "config_applied":
        c = event.config_applied
        return f"config {c.config_sha256[:12]} ({c.source}): {', '.join(c.upstreams)}"
    if which == "endpoints_changed":
        e = event.endpoints_changed
        changes = [*_endpoint_list("+", e.added), *_endpoint_list("-", e.removed)]
        listed = ", ".join(changes) or "no change"
        return f"{e.upstream}: {e.count} endpoints ({listed}; {e.source})"
    if which == "endpoint_ejected":
        return _ejection(event.endpoint_ejected)
    if which == "endpoint_returned":
        r = event.endpoint_returned
        return f"{r.upstream}: {r.endpoint} returned after {r.ejected_for_ms} ms"
    if which == "load_shedding":
        return _shedding(event.load_shedding)
    return ""


def _shedding(p: events_pb2.LoadShedding) -> str:
    if p.phase == "stopped":
        return (f"{p.upstream}: shedding stopped after {p.duration_ms} ms ({p.shed} shed; "
                f"{p.algorithm} limit {p.limit}, {p.in_flight} in flight)")
    return (f"{p.upstream}: shedding {p.phase} ({p.algorithm} limit {p.limit}, "
            f"{p.in_flight} in flight, {p.shed} shed)")


def table_row(event: events_pb2.Event) -> str:
    return (
        f"{event.global_position:>9}  {_rfc3339(event.occurred_at):<30}  {event.stream:<28}  "
        f"{event.version:>5}  {event.type:<20}  {_detail(event)}"
    )
