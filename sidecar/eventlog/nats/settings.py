"""Settings of the JetStream adapter: every default in one place, and the store URL.

``NatsSettings.from_url`` turns ``nats://h1:4222,h2:4222?replicas=3`` into settings and names
the bad part of a bad URL; the adapter's other modules only read the result.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl

from sidecar.eventlog.nats_auth import NatsAuth
from sidecar.eventlog.port import check_read_limit

DEFAULT_STREAM: Final = "EVENTLOG"
"""JetStream stream name; also the subject prefix (``<STREAM>.ev.>``, ``<STREAM>.head``)."""
DEFAULT_REPLICAS: Final = 1
"""Copies of the stream and of the checkpoint bucket (1, 3 or 5 in practice)."""
DEFAULT_DUPLICATE_WINDOW_S: Final = 120.0
"""JetStream's ``Nats-Msg-Id`` window. Not used for idempotency (see the package docstring)."""
DEFAULT_REQUEST_TIMEOUT_S: Final = 5.0
"""One JetStream request (publish ack, message get, stream info)."""
DEFAULT_CONNECT_TIMEOUT_S: Final = 5.0
"""Connecting to the first reachable server."""
DEFAULT_APPEND_RETRY_S: Final = 30.0
"""How long one append (or creating the stream and bucket) keeps retrying while the cluster
has no leader, is starting or is unreachable; then ``StoreError`` (the server: UNAVAILABLE)."""
DEFAULT_HEAD_POLL_INTERVAL_S: Final = 0.5
"""While ``wait_for_append`` has waiters: how often the leader's head is polled."""
DEFAULT_MAX_INFLIGHT_BATCHES: Final = 1
"""Atomic batches (group commits) one adapter has in flight at once (the server allows 50 per
stream). One measured best on R1 and R3 (benchmarks/eventlog.py): JetStream applies a stream's
batches one after the other anyway, and while one is in flight the next appends gather into
one larger group instead of paying the per-batch cost each."""
DEFAULT_READ_BATCH: Final = 1000
"""Messages asked for per direct-get request when scanning."""
DEFAULT_READ_MAX_BYTES: Final = 8 * 1024 * 1024
"""Bytes asked for per direct-get request (bounds memory per request)."""
DEFAULT_RETENTION: Final = False
"""Create the stream without ``deny_purge``, so retention can cut it (URL ``retention=1``;
JetStream cannot lift ``deny_purge`` later). ``deny_delete`` stays on either way."""
DEFAULT_RECENT_EVENTS: Final = 20_000
"""Events this adapter committed that it keeps in memory to answer reads of them (the
projection follower and live subscribers read what was just appended). 0 turns it off."""

DEFAULT_FOLLOW_HEARTBEAT_S: Final = 2.0
"""Idle heartbeat of the ordered consumer behind ``follow``: two missed ones and nats-py
recreates the consumer where it left off (e.g. after the node holding it died), so a live
subscriber stalls for about twice this after such a loss (nats-py's default is 5 s)."""

MAX_ATOMIC_BATCH_EVENTS: Final = 1000
"""nats-server's limit on messages in one atomic batch."""

_STREAM_NAME_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class NatsSettings:
    """Where the log lives and how the adapter behaves; defaults are the ``DEFAULT_*`` above.

    Built from a URL by ``NatsSettings.from_url``: ``nats://HOST:PORT[,HOST:PORT...]`` with
    optional query keys named like the fields (``?replicas=3&stream=EVENTLOG``).
    """

    servers: tuple[str, ...]
    stream: str = DEFAULT_STREAM
    replicas: int = DEFAULT_REPLICAS
    kv_bucket: str = ""
    """Checkpoint bucket; "" means ``<stream>_CHECKPOINTS``."""
    duplicate_window_s: float = DEFAULT_DUPLICATE_WINDOW_S
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    append_retry_s: float = DEFAULT_APPEND_RETRY_S
    head_poll_interval_s: float = DEFAULT_HEAD_POLL_INTERVAL_S
    max_inflight_batches: int = DEFAULT_MAX_INFLIGHT_BATCHES
    read_batch: int = DEFAULT_READ_BATCH
    recent_events: int = DEFAULT_RECENT_EVENTS
    retention: bool = DEFAULT_RETENTION
    auth: NatsAuth = field(default_factory=NatsAuth)
    """TLS files and credential (``sidecar.eventlog.nats_auth``); ``tls://`` servers use TLS."""

    def __post_init__(self) -> None:
        if not self.servers:
            raise ValueError("servers: at least one HOST:PORT is needed")
        if not _STREAM_NAME_RE.fullmatch(self.stream):
            raise ValueError(
                f"stream: {self.stream!r} must be 1-64 characters of letters, digits, '_' or '-'"
            )
        if self.kv_bucket and not _STREAM_NAME_RE.fullmatch(self.kv_bucket):
            raise ValueError(
                f"kv_bucket: {self.kv_bucket!r} must be 1-64 characters of letters, digits, "
                "'_' or '-'"
            )
        if not 1 <= self.replicas <= 5:
            raise ValueError(f"replicas: must be 1..5, got {self.replicas}")
        for name in ("duplicate_window_s", "request_timeout_s", "connect_timeout_s",
                     "append_retry_s", "head_poll_interval_s"):
            if not math.isfinite(getattr(self, name)):  # NaN passes every comparison below
                raise ValueError(f"{name}: must be a finite number, got {getattr(self, name)}")
        for name in ("request_timeout_s", "connect_timeout_s", "head_poll_interval_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.duplicate_window_s < 0:
            raise ValueError(f"duplicate_window_s: must be >= 0, got {self.duplicate_window_s}")
        if self.append_retry_s < 0:
            raise ValueError(f"append_retry_s: must be >= 0, got {self.append_retry_s}")
        if not 1 <= self.max_inflight_batches <= 50:
            raise ValueError(
                f"max_inflight_batches: must be 1..50, got {self.max_inflight_batches}"
            )
        check_read_limit(self.read_batch, "read_batch")
        if self.recent_events < 0:
            raise ValueError(f"recent_events: must be >= 0, got {self.recent_events}")

    @property
    def checkpoint_bucket(self) -> str:
        return self.kv_bucket or f"{self.stream}_CHECKPOINTS"

    @classmethod
    def from_url(cls, url: str, auth: NatsAuth | None = None) -> NatsSettings:
        """Parse ``nats://h:p[,h:p...][?key=value...]`` (or ``tls://``: TLS to every server);
        ``ValueError`` names the bad part."""
        scheme, sep, rest = url.partition("://")
        if scheme not in ("nats", "tls") or not sep:
            raise ValueError(f"store: {url!r} is not a nats://HOST:PORT[,HOST:PORT...] URL")
        hosts, _, query = rest.partition("?")
        hosts = hosts.rstrip("/")
        servers: list[str] = []
        for host in hosts.split(","):
            host = host.strip()
            address = host.rpartition("@")[2]  # user:password@ is passed on to nats-py
            name, colon, port = address.rpartition(":")
            if not host or not colon or not name or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"store: {url!r}: server {host!r} must be HOST:PORT")
            servers.append(f"{scheme}://{host}")
        converters: dict[str, Callable[[str], object]] = {
            "stream": str,
            "replicas": int,
            "kv_bucket": str,
            "duplicate_window_s": float,
            "request_timeout_s": float,
            "connect_timeout_s": float,
            "append_retry_s": float,
            "head_poll_interval_s": float,
            "max_inflight_batches": int,
            "read_batch": int,
            "recent_events": int,
            "retention": _flag,
        }
        options = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
        unknown = sorted(set(options) - set(converters))
        if unknown:
            raise ValueError(
                f"store: unknown nats option(s) {unknown}; known: {sorted(converters)}"
            )
        kwargs: dict[str, Any] = {}
        for key, text in options.items():
            try:
                kwargs[key] = converters[key](text)
            except ValueError:
                raise ValueError(f"store: {url!r}: {key}: {text!r} is not a valid value") from None
        try:
            return cls(servers=tuple(servers), auth=auth or NatsAuth(), **kwargs)
        except ValueError as exc:
            raise ValueError(f"store: {url!r}: {exc}") from None


def _flag(text: str) -> bool:
    """A URL flag: 1/true/yes/on or 0/false/no/off."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)
