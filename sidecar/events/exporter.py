"""The exporter half of the shipper: encodes and sends, decides nothing (OpenTelemetry's
``SpanExporter``).

:class:`GrpcEventExporter` talks ``EventLog.Append`` and ``EventLog.ReadStream`` over one
synchronous gRPC channel and turns a failed RPC into :class:`ExportError`;
:class:`EventExporter` is the port the :class:`~sidecar.events.shipper.Shipper` (and its unit
tests' fake log) use. Threading: owned by the shipper's thread.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import grpc

from sidecar.channels import TimeoutStreak
from sidecar.resilience.pushback import PUSHBACK_KEY, parse_pushback
from sidecar.v1 import eventlog_pb2, eventlog_pb2_grpc, events_pb2

__all__ = [
    "STALE_AFTER_TIMEOUTS",
    "TOKEN_METADATA_KEY",
    "UNHEALTHY_CODES",
    "Acknowledgement",
    "EventExporter",
    "ExportError",
    "GrpcEventExporter",
    "hinted_delay_s",
]

_log = logging.getLogger("sidecar.events")

UNHEALTHY_CODES: Final = frozenset(
    {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "INTERNAL", "UNKNOWN",
     "CANCELLED"}
)
"""Failures that say the event log is unwell: they count against the shipper's breaker. Others
(a conflict, a refused request) are answers from a healthy log."""
TOKEN_METADATA_KEY: Final = "authorization"
"""Metadata key of the event log's bearer token (``Bearer <token>``)."""
STALE_AFTER_TIMEOUTS: Final = 2
"""RPCs in a row ending DEADLINE_EXCEEDED after which :class:`GrpcEventExporter` drops its
channel and opens a new one. A deadline does not close a connection, and gRPC never notices a
connection that a partition (or a lost NAT entry) swallowed unless keepalive pings run, which
the server would have to permit: without this the shipper would retry on a dead TCP connection
after the network healed, until the kernel gave up on it (~15 min). tests/chaos shows it."""


class ExportError(Exception):
    """An RPC to the event log failed; ``code`` is the gRPC status name. ``retry_after_s``: the
    log's own retry hint (``grpc-retry-pushback-ms``, sent with RESOURCE_EXHAUSTED by an
    overloaded log), None when it gave none."""

    def __init__(self, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s

    @property
    def unhealthy(self) -> bool:
        """True when the failure says the log is down or overloaded (breaker failure)."""
        return self.code in UNHEALTHY_CODES


def hinted_delay_s(hint_s: float, backoff_s: float, max_s: float, jitter: float,
                   rng: random.Random) -> float:
    """The wait after a refusal carrying the log's retry hint: at least the hint, stretched by
    up to ``jitter`` (so shippers refused together spread out), never below our own backoff,
    and capped at ``max_s`` (the shipper's ``backoff_max_ms``: a hint cannot park it longer).

    >>> hinted_delay_s(0.5, 0.1, 10.0, 0.0, random.Random(0))
    0.5
    """
    return min(max_s, max(backoff_s, hint_s * (1.0 + jitter * rng.random())))


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """The log's answer for one appended event."""

    event_id: str
    version: int
    global_position: int
    duplicate: bool


class EventExporter(Protocol):
    """Encodes and sends; decides nothing. Methods block up to ``timeout_s`` and raise
    :class:`ExportError` when the RPC fails."""

    def append(self, events: Sequence[events_pb2.Event],
               timeout_s: float) -> list[Acknowledgement]:
        """Append one atomic batch; one acknowledgement per event, in order."""
        ...

    def read_stream(self, stream: str, from_version: int, limit: int,
                    timeout_s: float) -> list[events_pb2.Event]:
        """Up to ``limit`` events of ``stream`` from ``from_version``, in version order."""
        ...

    def stream_anchor(self, stream: str, timeout_s: float) -> tuple[int, bytes]:
        """Where the log's retention cut ``stream``: (version, hash) of the last deleted event,
        (0, b"") when it never did. Versions up to it are gone on purpose, not lost."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


class GrpcEventExporter:
    """:class:`EventExporter` over a synchronous gRPC channel to ``sidecar.v1.EventLog``.

    The channel's reconnect backoff is capped at ``max_reconnect_backoff_ms`` (gRPC's default
    grows to 120 s, which would hide a recovered log for minutes). After
    :data:`STALE_AFTER_TIMEOUTS` timeouts in a row the channel is replaced by a new one (a new
    TCP connection): the old one may be stuck on a connection a partition swallowed. ``credentials``
    (:func:`sidecar.tls.channel_credentials`) make it a TLS channel; ``server_name`` overrides
    the name checked in the server's certificate.

    Example::

        exporter = GrpcEventExporter("127.0.0.1:7070", token=None)
        acks = exporter.append([event], timeout_s=5.0)
    """

    def __init__(self, address: str, *, token: str | None = None,
                 max_reconnect_backoff_ms: int = 10_000,
                 credentials: grpc.ChannelCredentials | None = None,
                 server_name: str | None = None) -> None:
        backoff_ms = max(100, int(max_reconnect_backoff_ms))
        self.address = address
        self._options: list[tuple[str, object]] = [
            ("grpc.initial_reconnect_backoff_ms", min(backoff_ms, 200)),
            ("grpc.min_reconnect_backoff_ms", min(backoff_ms, 200)),
            ("grpc.max_reconnect_backoff_ms", backoff_ms),
            # a channel of its own connection: with grpc's shared subchannel pool, the new
            # channel opened after repeated timeouts could pick up the old, dead connection
            ("grpc.use_local_subchannel_pool", 1),
        ]
        if server_name is not None:
            self._options.append(("grpc.ssl_target_name_override", server_name))
        self._credentials = credentials
        self._open()
        self._metadata: tuple[tuple[str, str], ...] = (
            ((TOKEN_METADATA_KEY, f"Bearer {token}"),) if token else ()
        )
        self._streak = TimeoutStreak(STALE_AFTER_TIMEOUTS)
        self.reopened = 0
        """Channels dropped after STALE_AFTER_TIMEOUTS timeouts in a row (since start)."""

    def _open(self) -> None:
        self._channel = (
            grpc.insecure_channel(self.address, options=self._options)
            if self._credentials is None
            else grpc.secure_channel(self.address, self._credentials, options=self._options))
        self._stub = eventlog_pb2_grpc.EventLogStub(self._channel)  # type: ignore[no-untyped-call]

    def _failed(self, exc: grpc.RpcError) -> ExportError:
        """The ExportError for a failed RPC; opens a new channel after repeated timeouts."""
        code: str = exc.code().name
        if code != "DEADLINE_EXCEEDED":
            self._streak.reset()
        elif self._streak.timed_out():
            _log.info("event log calls timed out %d times in a row: opening a new "
                      "connection to %s", self._streak.count, self.address,
                      extra={"event": "reconnect", "eventlog": self.address})
            stale = self._channel
            self._open()
            stale.close()
            self._streak.reset()
            self.reopened += 1
        return ExportError(code, str(exc.details()), _retry_hint_s(exc))

    def __repr__(self) -> str:  # never show the token
        return f"GrpcEventExporter({self.address!r})"

    def append(self, events: Sequence[events_pb2.Event],
               timeout_s: float) -> list[Acknowledgement]:
        try:
            response = self._stub.Append(eventlog_pb2.AppendRequest(events=events),
                                         timeout=timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._failed(exc) from None
        self._streak.reset()
        return [Acknowledgement(r.event_id, int(r.version), int(r.global_position),
                                bool(r.duplicate)) for r in response.results]

    def read_stream(self, stream: str, from_version: int, limit: int,
                    timeout_s: float) -> list[events_pb2.Event]:
        try:
            response = self._stub.ReadStream(
                eventlog_pb2.ReadStreamRequest(stream=stream, from_version=from_version,
                                               limit=limit),
                timeout=timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._failed(exc) from None
        self._streak.reset()
        return list(response.events)

    def stream_anchor(self, stream: str, timeout_s: float) -> tuple[int, bytes]:
        try:
            response = self._stub.ReadStream(
                eventlog_pb2.ReadStreamRequest(stream=stream, from_version=1, limit=1),
                timeout=timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._failed(exc) from None
        self._streak.reset()
        return int(response.retention_anchor_version), bytes(response.retention_anchor_hash)

    def close(self) -> None:
        self._channel.close()


def _retry_hint_s(exc: grpc.RpcError) -> float | None:
    """The server's ``grpc-retry-pushback-ms`` trailer in seconds (None: absent or "stop")."""
    trailing = getattr(exc, "trailing_metadata", None)
    metadata = trailing() if callable(trailing) else None
    values = [str(v) for k, v in (metadata or ()) if k == PUSHBACK_KEY]
    hint = parse_pushback(values)
    return hint if isinstance(hint, float) else None
