"""NATS JetStream adapter of the event store port: the log on a replicated JetStream stream.

``open_store("nats://h1:4222,h2:4222,h3:4222?replicas=3")`` gives a ``NatsEventStore``. The
event log server keeps nothing on local disk: the log is one JetStream stream (file storage,
``replicas`` copies kept by Raft), projection checkpoints live in a JetStream key-value bucket
beside it. Several event log servers can therefore serve the same cluster.

How the port's promises map onto JetStream
-------------------------------------------

**One subject per (stream, version)**: the event at version ``v`` of stream ``svc/inst`` is
stored on ``<STREAM>.ev.<b64(svc)>.<b64(inst)>.<v>``. The JetStream stream allows one message
per subject and refuses a second one (``max_msgs_per_subject=1`` with
``discard=new, discard_new_per_subject``). So a version can never be written twice, whatever
the duplicate window, and whoever writes: idempotency holds *forever*, not for
``duplicate_window`` (JetStream's ``Nats-Msg-Id`` de-duplication is not relied on; the window
only sizes the server's de-duplication table). A retry of a stored event finds its slot taken
by the same ``event_id`` and returns the original position with ``duplicate=True``; a
different event there is a ``ConflictError`` naming both.

**The chain**: before a batch is sent, the adapter checks it against each stream's head (the
last message on ``<STREAM>.ev.<svc>.<inst>.*``, or the stream's retention anchor when that is
later): versions follow on, ``prev_hash`` is the head's
hash, ``hash`` is recomputed. The first event of every stream in the batch carries
``Nats-Expected-Last-Subject-Sequence`` (the head's stream sequence; 0 once cut whole) for
that wildcard subject,
so the server refuses the batch if any other writer (another event log replica) moved the head
meanwhile; the adapter then re-reads the head and decides again (duplicate, conflict or
retry).

**Atomic batches and group commit**: the new events of an append go out as one JetStream
atomic batch (ADR-50, ``allow_atomic``): all of its messages are stored or none. Appends that
arrive while earlier ones are in flight share the next batch (group commit, at most
``MAX_ATOMIC_BATCH_EVENTS`` messages, the server's limit): JetStream stages every atomic batch
in a temporary store before applying it, a fixed cost per batch that grouping spreads. A
single message is atomic by itself and skips the batch protocol. Appends to one stream from
one adapter are decided in arrival order (a per-stream lock), like the SQLite writer.

**Global position = stream sequence**, gap-free except where retention deleted: the stream
is created with ``deny_delete`` and without age, count or size limits, refused batches take
no sequence, and the only messages ever removed are the stream prefixes retention purges.
``read_all`` checks the sequences it gets: a gap at or below the highest retention anchor's
position is a cut (skipped), any other gap raises ``StoreError``. JetStream keeps the last
sequence when the newest messages are purged, so positions are never given again.

**Retention** (``cut``/``anchors``, ``sidecar.eventlog.nats_retention``): a stream's anchor
is written to the checkpoint bucket (one key per stream, compare-and-set) *before* its prefix
is purged, in one filtered purge request. Until the purge is done every read (``read_stream``,
``read_all``, ``follow``, the memory of recent appends) hides the events at or below the
anchor, appends there raise ``BeforeAnchorError``, and a cut again finishes a purge a crash
interrupted. The head of a stream cut whole is its anchor, so the next append chains on it.
Every adapter learns the anchors at connect and from a KV watcher (another replica's cut
within milliseconds); the head of a stream is read before its anchor, so an append never
judges against a stale genesis. Purging needs a stream created without ``deny_purge``
(``retention=1``; JetStream cannot lift ``deny_purge`` on an existing stream): on one that
denies purges ``cut`` raises ``StoreError`` saying so.

**Durability**: an append is answered after JetStream acknowledged it: on R1 the server has
written it to its file (the OS page cache: it survives a nats-server crash); on R3 a quorum
(2 of 3) of nodes has. Reaching the disk is governed by the servers' ``sync_interval``
(default every 2 minutes; ``always`` fsyncs each write): see README "Running at scale".

Known limit: ``event_id`` uniqueness is enforced per (stream, version) slot forever, but the
same ``event_id`` reused for a *different* slot is not detected (that would need a second
write per event; the producer never does it: an id is made once per event).

**Reads**: events this adapter committed itself are answered from memory (the last
``recent_events`` of them: the projection follower and live subscribers mostly read what was
just appended). Everything else comes from batched *direct gets* (``allow_direct``), without
headers when no subject filter applies (positions follow from the start; the end-of-batch
marker proves there was no gap); a service/instance filter is applied by the server as a
subject filter. Any replica may answer a direct get, so on R3 a follower can lag: a read that
ends before the head the leader reports is asked again.

**Waiting**: ``wait_for_append`` (the projection follower uses it) wakes on a notification
every adapter publishes after each commit (core NATS, ``<STREAM>.head``) and, while someone
waits, polls the leader's head every ``head_poll_interval_s`` (so appends made elsewhere, or a
lost notification, are seen too).

**Following** (the server's Subscribe): ``follow`` catches up with ``read_all`` pages, then
follows live from a JetStream *ordered consumer* (ephemeral, in memory, flow-controlled)
started at the catch-up's cursor: pushed in order with no polling, recreated by nats-py where
it left off when it misses heartbeats (e.g. its node died). Measured against the port's
default (``wait_for_append`` + ``read_all``, benchmarks/eventlog_subscribe.py): about half the
latency from append to delivery, but less live throughput per subscriber (every subscriber
gets and decodes its own copy over the network, where the default serves recent commits of
this adapter from memory): see benchmarks/RESULTS.md.

Threading: all methods are coroutines for one event loop; the connection is made lazily on
first use, inside that loop. Nothing blocks the loop.

Example::

    store = open_nats_store("nats://127.0.0.1:4222?stream=EVENTLOG&replicas=1")
    outcomes = await store.append(events)
    await store.close()
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import hashlib
import itertools
import json
import logging
import math
import re
import struct
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)
from nats.js.kv import KeyValue

from sidecar import chain
from sidecar.eventlog.anchors import RetentionAnchor, check_after_anchor
from sidecar.eventlog.nats_auth import NatsAuth, quiet_ssl_eof_warning
from sidecar.eventlog.nats_retention import (
    AnchorBook,
    AnchorUnavailable,
    AnchorWatch,
    anchor_key,
    cut_stream,
    load_all_anchors,
    load_anchor,
)
from sidecar.eventlog.records import validate_new_event
from sidecar.eventlog.store import (
    DEFAULT_FOLLOW_WAIT_S,
    DEFAULT_READ_LIMIT,
    MAX_READ_LIMIT,
    NO_FILTER,
    AppendOutcome,
    ChainError,
    ConflictError,
    EventFilter,
    EventStore,
    FollowBatch,
    InvalidEventError,
    NewEvent,
    StoredEvent,
    StoreError,
    check_read_limit,
    check_same_content,
    read_until_head,
    version_taken,
)

_log = logging.getLogger(__name__)

# --- settings (every default in one place) -------------------------------------------------

DEFAULT_STREAM: Final = "EVENTLOG"
"""JetStream stream name; also the subject prefix (``<STREAM>.ev.>``, ``<STREAM>.head``)."""
DEFAULT_REPLICAS: Final = 1
"""Copies of the stream and of the checkpoint bucket (1, 3 or 5 in practice)."""
DEFAULT_DUPLICATE_WINDOW_S: Final = 120.0
"""JetStream's ``Nats-Msg-Id`` window. Not used for idempotency (see module docstring)."""
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
FORMAT_VERSION: Final = 1
"""First byte of every stored message body; bump when the encoding changes."""

_STREAM_NAME_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_RECONNECT_WAIT_S: Final = 0.25
_RETRY_BACKOFF_S: Final = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
_MAX_STALE_REPLANS: Final = 50
"""Re-plans after another writer moved a head, before giving up (contention bound)."""
_MAX_SEQUENCE: Final = 2**64 - 1
"""JetStream stream sequences are unsigned 64-bit."""
_STALE_READ_RETRIES: Final = 40
_STALE_READ_PAUSE_S: Final = 0.05
_SLOT_LOOKUP_CONCURRENCY: Final = 64
_CHECKPOINT_INLINE: Final = b"\x00"
_CHECKPOINT_CHUNKED: Final = b"\x01"
_CHUNK_HEADROOM_BYTES: Final = 4096

# JetStream API error codes this adapter reacts to.
_ERR_WRONG_LAST_SEQUENCE: Final = 10071
_ERR_WRONG_LAST_SEQUENCE_IN_FLIGHT: Final = 10164
"""Clustered: another batch expecting the same subject sequence is still being proposed."""
_ERR_MAX_MSGS_PER_SUBJECT: Final = 10077
_ERR_NO_MESSAGE_FOUND: Final = 10037
_STALE_ERRORS: Final = frozenset(
    {_ERR_WRONG_LAST_SEQUENCE, _ERR_WRONG_LAST_SEQUENCE_IN_FLIGHT, _ERR_MAX_MSGS_PER_SUBJECT}
)

_CONNECTION_ERRORS: Final = (
    TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
)
"""Client-side failures after which the outcome of a request is unknown (retry-able)."""

_SETUP_RETRYABLE: Final = (
    TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.ServerError,
    nats.js.errors.ServiceUnavailableError,
)
"""Failures while creating the stream or bucket that a later attempt may not meet."""

_HDR_BATCH_ID: Final = "Nats-Batch-Id"
_HDR_BATCH_SEQ: Final = "Nats-Batch-Sequence"
_HDR_BATCH_COMMIT: Final = "Nats-Batch-Commit"
_HDR_MSG_ID: Final = "Nats-Msg-Id"
_HDR_EXPECTED_SUBJECT_SEQ: Final = "Nats-Expected-Last-Subject-Sequence"
_HDR_EXPECTED_SUBJECT: Final = "Nats-Expected-Last-Subject-Sequence-Subject"


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
        if not 1 <= self.read_batch <= MAX_READ_LIMIT:
            raise ValueError(f"read_batch: must be 1..{MAX_READ_LIMIT}, got {self.read_batch}")
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


def open_nats_store(url: str, auth: NatsAuth | None = None) -> NatsEventStore:
    """The JetStream store for ``url`` (see ``NatsSettings.from_url``); connects on first use."""
    return NatsEventStore(NatsSettings.from_url(url, auth))


# --- subjects ---------------------------------------------------------------------------------


def _token(text: str) -> str:
    """A subject token for any string: unpadded URL-safe base64, "=" for the empty string."""
    if not text:
        return "="
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def _untoken(token: str) -> str:
    if token == "=":
        return ""
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()


def _stream_tokens(stream: str) -> str:
    """``svc/inst`` → ``<b64 svc>.<b64 inst>``; a name without "/" → ``<b64 name>.~``."""
    service, sep, instance = stream.partition("/")
    return f"{_token(service)}.{_token(instance) if sep else '~'}"


def _stream_from_tokens(service_token: str, instance_token: str) -> str:
    service = _untoken(service_token)
    if instance_token == "~":
        return service
    return f"{service}/{_untoken(instance_token)}"


@dataclass(frozen=True, slots=True)
class _Subjects:
    """Subject names of one deployment (prefix = the JetStream stream name)."""

    prefix: str

    @property
    def events(self) -> str:
        return f"{self.prefix}.ev.>"

    @property
    def head(self) -> str:
        return f"{self.prefix}.head"

    def stream_all(self, stream: str) -> str:
        return f"{self.prefix}.ev.{_stream_tokens(stream)}.*"

    def slot(self, stream: str, version: int) -> str:
        return f"{self.prefix}.ev.{_stream_tokens(stream)}.{version}"

    def first_versions(self) -> str:
        return f"{self.prefix}.ev.*.*.1"

    def filter_for(self, flt: EventFilter) -> str | None:
        """A subject filter doing the service/instance part of ``flt`` on the server."""
        if flt.service and flt.instance:
            return f"{self.prefix}.ev.{_token(flt.service)}.{_token(flt.instance)}.*"
        if flt.service:
            return f"{self.prefix}.ev.{_token(flt.service)}.*.*"
        return None

    def stream_of(self, subject: str) -> str:
        parts = subject.split(".")
        if len(parts) != 5 or parts[1] != "ev":
            raise StoreError(f"subject {subject!r} is not an event subject of {self.prefix}")
        return _stream_from_tokens(parts[2], parts[3])


# --- message body codec ------------------------------------------------------------------------

_BODY_HEAD: Final = struct.Struct(">BQqq32s32sHHHHHHHI")
"""format, version, occurred_at_ns, recorded_at_ns, prev_hash, hash, then the lengths of
event_id, stream, type, trace_id, service, instance, upstream (u16 each) and payload (u32); the
bytes follow in that order."""


def encode_event(event: NewEvent, recorded_at_ns: int) -> bytes:
    """The stored body of ``event`` (compact, fixed order; see ``_BODY_HEAD``).

    ``recorded_at_ns`` is the adapter's clock when it sent the batch (not JetStream's
    timestamp), so an event this adapter committed reads back identical from its memory.
    """
    texts = [
        event.event_id.encode(),
        event.stream.encode(),
        event.type.encode(),
        event.trace_id.encode(),
        event.service.encode(),
        event.instance.encode(),
        event.upstream.encode(),
    ]
    for name, value in zip(
        ("event_id", "stream", "type", "trace_id", "service", "instance", "upstream"),
        texts,
        strict=True,
    ):
        if len(value) > 0xFFFF:
            raise InvalidEventError(name, f"{len(value)} bytes is too long (max 65535)",
                                    event_id=event.event_id)
    head = _BODY_HEAD.pack(
        FORMAT_VERSION,
        event.version,
        event.occurred_at_ns,
        recorded_at_ns,
        event.prev_hash,
        event.hash,
        *(len(t) for t in texts),
        len(event.payload),
    )
    return b"".join((head, *texts, event.payload))


def decode_event(body: bytes, global_position: int) -> StoredEvent:
    """Inverse of ``encode_event`` at ``global_position``; ``StoreError`` if malformed."""
    try:
        (fmt, version, occurred_at_ns, recorded_at_ns, prev_hash, hash_, *lengths) = (
            _BODY_HEAD.unpack_from(body)
        )
    except struct.error:
        raise StoreError(f"position {global_position}: stored body is truncated") from None
    if fmt != FORMAT_VERSION:
        raise StoreError(f"position {global_position}: unknown body format {fmt}")
    offset = _BODY_HEAD.size
    fields: list[bytes] = []
    for length in lengths:
        fields.append(body[offset : offset + length])
        offset += length
    if offset != len(body):
        raise StoreError(f"position {global_position}: stored body has the wrong length")
    event_id, stream, type_, trace_id, service, instance, upstream = (
        f.decode() for f in fields[:7]
    )
    return StoredEvent(
        event_id=event_id,
        stream=stream,
        version=version,
        type=type_,
        occurred_at_ns=occurred_at_ns,
        trace_id=trace_id,
        payload=fields[7],
        prev_hash=prev_hash,
        hash=hash_,
        service=service,
        instance=instance,
        upstream=upstream,
        global_position=global_position,
        recorded_at_ns=recorded_at_ns,
    )


def _parse_header_block(raw: bytes) -> dict[str, str]:
    """``NATS/1.0\\r\\nKey: value\\r\\n...`` (as MSG.GET returns it, base64-decoded) → dict."""
    headers: dict[str, str] = {}
    for line in raw.decode(errors="replace").split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip()] = value.strip()
    return headers


# --- internal records ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Head:
    """The last stored event of one stream: its version, hash and stream sequence."""

    version: int
    hash: bytes
    sequence: int


_EMPTY_HEAD: Final = _Head(0, chain.GENESIS_HASH, 0)


@dataclass(frozen=True, slots=True)
class _Slot:
    """A stored event and the atomic batch that wrote it."""

    event: StoredEvent
    batch_id: str


@dataclass
class _Plan:
    """What one attempt at an append will do."""

    outcomes: list[AppendOutcome | None]
    """Per unique input event: known now (duplicate) or None (to be written)."""
    new: list[tuple[int, NewEvent]] = field(default_factory=list)
    """(index into outcomes, event) to publish, grouped by stream, in version order."""
    expectations: dict[str, _Head] = field(default_factory=dict)
    """Stream → the head the batch was planned against."""
    recorded_at_ns: int = 0
    """Set when the plan is sent (the group's clock reading)."""


@dataclass(eq=False)
class _Pending:
    """A plan waiting for the next group commit, and who waits for it."""

    plan: _Plan
    attempts: set[str]
    future: asyncio.Future[list[int]]


class _KeyedLocks:
    """One ``asyncio.Lock`` per key, created on demand and dropped when unused."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, keys: Iterable[str]) -> AsyncIterator[None]:
        """Hold the locks of ``keys`` (taken in sorted order: no deadlock between holders)."""
        ordered = sorted(set(keys))
        entries = []
        for key in ordered:
            entry = self._locks.setdefault(key, (asyncio.Lock(), [0]))
            entry[1][0] += 1
            entries.append((key, entry))
        taken: list[asyncio.Lock] = []
        try:
            for _, (lock, _) in entries:
                await lock.acquire()
                taken.append(lock)
            yield
        finally:
            for lock in reversed(taken):
                lock.release()
            for key, (_, users) in entries:
                users[0] -= 1
                if users[0] == 0:
                    del self._locks[key]


class _Stale(Exception):
    """The server refused the batch because a head moved: plan again."""


class _Transient(Exception):
    """No leader, timeout, reconnecting...: the outcome is unknown; plan again after a pause."""


_T = TypeVar("_T")


class NatsEventStore(EventStore):
    """The event store on a JetStream stream (see the module docstring for the design)."""

    def __init__(self, settings: NatsSettings) -> None:
        self._settings = settings
        self._subjects = _Subjects(settings.stream)
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._kv: KeyValue | None = None
        self._connect_lock = asyncio.Lock()
        self._closed = False
        self._heads: dict[str, _Head] = {}
        self._stream_locks = _KeyedLocks()
        self._last_recorded_ns = 0
        self._recent: dict[int, StoredEvent] = {}
        self._recent_order: collections.deque[int] = collections.deque()
        self._pending: collections.deque[_Pending] = collections.deque()
        self._committers = 0
        self._committer_tasks: set[asyncio.Task[None]] = set()
        self._head_seen = 0
        self._head_changed = asyncio.Event()
        self._waiters = 0
        self._poller: asyncio.Task[None] | None = None
        self._replicated = False
        self._max_payload = 1024 * 1024
        self._refused: list[str] = []
        self._book = AnchorBook()
        self._anchor_watch: AnchorWatch | None = None
        self._purge_allowed = False

    @property
    def settings(self) -> NatsSettings:
        return self._settings

    # --- connection ---------------------------------------------------------------------

    async def _ensure(self) -> JetStreamContext:
        if self._closed:
            raise StoreError("the store is closed")
        if self._js is not None:
            return self._js
        async with self._connect_lock:
            if self._js is None:
                await self._connect()
        assert self._js is not None
        return self._js

    async def _connect(self) -> None:
        s = self._settings
        nc = NatsClient()
        refused = self._refused  # a TLS/auth/permission failure: retrying will not help
        refused.clear()
        if s.auth.wants_tls or any(server.startswith("tls://") for server in s.servers):
            quiet_ssl_eof_warning()
        options = s.auth.connect_options(
            tls_scheme=any(server.startswith("tls://") for server in s.servers))

        async def on_error(exc: Exception) -> None:
            reason = s.auth.explain(exc)
            if reason is not None and self._nc is None:
                refused.append(reason)
                if connecting is not None:
                    connecting.cancel()
            await _log_nats_error(exc)

        connecting: asyncio.Task[None] | None = None
        try:
            # nats-py retries the first connection forever with max_reconnect_attempts=-1
            # (wanted later: a restarted or failed-over server must be reconnected), so the
            # first connection is bounded here, and cut short by a refusal.
            connecting = asyncio.ensure_future(
                nc.connect(
                    servers=list(s.servers),
                    # nats-py annotates these as int but sleeps on floats
                    connect_timeout=s.connect_timeout_s,  # type: ignore[arg-type]
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=_RECONNECT_WAIT_S,  # type: ignore[arg-type]
                    allow_reconnect=True,
                    name=f"sidecar-eventlog:{s.stream}",
                    error_cb=on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=_log_reconnected,
                    **options,
                ),
            )
            await asyncio.wait_for(connecting, timeout=s.connect_timeout_s * (len(s.servers) + 1))
        except (TimeoutError, OSError, nats.errors.Error, asyncio.CancelledError) as exc:
            with contextlib.suppress(Exception):
                await nc.close()
            if refused:
                raise StoreError(refused[-1]) from None
            reason = s.auth.explain(exc)
            if reason is not None:
                raise StoreError(reason) from None
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise StoreError(
                f"cannot connect to NATS at {', '.join(s.servers)} within "
                f"{s.connect_timeout_s * (len(s.servers) + 1):.0f}s: {exc!r}"
            ) from None
        js = nc.jetstream(timeout=s.request_timeout_s)
        try:
            await self._ensure_stream(js)
            self._kv = await self._ensure_bucket(js)
            self._anchor_watch = await AnchorWatch.start(
                nc, self._kv, s.checkpoint_bucket, self._book, s.request_timeout_s)
            await nc.subscribe(self._subjects.head, cb=self._on_head_notice)
            await nc.flush(timeout=s.request_timeout_s)  # type: ignore[arg-type]
            if refused:
                raise StoreError(refused[-1])
        except BaseException as exc:
            if self._anchor_watch is not None:
                await self._anchor_watch.close()
                self._anchor_watch = None
            await nc.close()
            if refused and not isinstance(exc, asyncio.CancelledError):
                raise StoreError(refused[-1]) from None
            raise
        self._max_payload = nc.max_payload
        self._nc, self._js = nc, js
        self._poller = asyncio.get_running_loop().create_task(self._poll_head())

    async def _on_disconnected(self) -> None:
        # Only a connection that was up is "reconnecting": a first connect that failed, or
        # close(), also ends in this callback.
        if self._nc is not None and not self._closed:
            _log.info("event store: disconnected from NATS, reconnecting")

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        s = self._settings
        config = StreamConfig(
            name=s.stream,
            description="Evergreen Sidecar breaker event log (one subject per stream version)",
            subjects=[self._subjects.events],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=s.replicas,
            discard=DiscardPolicy.NEW,
            discard_new_per_subject=True,
            max_msgs_per_subject=1,
            duplicate_window=s.duplicate_window_s,
            deny_delete=True,
            deny_purge=not s.retention,
            allow_direct=True,
            allow_atomic=True,
        )

        async def create() -> StreamInfo:
            try:
                return await js.add_stream(config)
            except nats.js.errors.BadRequestError as refused:
                # Exists with other settings (e.g. made by an older release, or another
                # replica with another retention= just made it): use it if it keeps the
                # invariants this adapter relies on, else refuse to start. On a cluster a
                # stream just created may not be found at once: ask a few times.
                for pause in _RETRY_BACKOFF_S:
                    try:
                        return await js.stream_info(s.stream)
                    except nats.js.errors.NotFoundError:
                        await asyncio.sleep(pause)
                raise StoreError(
                    f"JetStream refused stream {s.stream!r}: {refused.description}"
                ) from None

        info = await self._setup_step(f"creating JetStream stream {s.stream!r}", create)
        cfg = info.config
        problems = [
            what
            for what, ok in (
                ("max_msgs_per_subject must be 1", cfg.max_msgs_per_subject == 1),
                ("discard must be 'new'", cfg.discard == DiscardPolicy.NEW),
                ("discard_new_per_subject must be set", bool(cfg.discard_new_per_subject)),
                ("allow_atomic must be set", bool(cfg.allow_atomic)),
                ("allow_direct must be set", bool(cfg.allow_direct)),
                ("deny_delete must be set", bool(cfg.deny_delete)),
                ("subjects must be exactly " + self._subjects.events,
                 list(cfg.subjects or []) == [self._subjects.events]),
            )
            if not ok
        ]
        if problems:
            raise StoreError(
                f"JetStream stream {s.stream!r} exists with unsafe settings: {'; '.join(problems)}"
            )
        self._replicated = (cfg.num_replicas or 1) > 1
        self._purge_allowed = not cfg.deny_purge
        if s.retention and cfg.deny_purge:
            _log.warning("JetStream stream %r exists with deny_purge (created without "
                         "retention=1), which JetStream cannot lift: retention cannot cut it",
                         s.stream)
        self._note_head(info.state.last_seq)

    async def _ensure_bucket(self, js: JetStreamContext) -> KeyValue:
        s = self._settings

        async def create() -> KeyValue:
            try:
                return await js.key_value(s.checkpoint_bucket)
            except nats.js.errors.BucketNotFoundError:
                pass
            return await js.create_key_value(
                KeyValueConfig(
                    bucket=s.checkpoint_bucket,
                    description="Evergreen Sidecar projection checkpoints",
                    history=1,
                    storage=StorageType.FILE,
                    replicas=s.replicas,
                    direct=False,  # reads from the leader: a saved checkpoint is seen at once
                )
            )

        return await self._setup_step(f"creating KV bucket {s.checkpoint_bucket!r}", create)

    async def _setup_step(self, what: str, step: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``step``, retrying server-side failures (JetStream starting up, an election)
        for up to ``append_retry_s``; other failures are reported at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.append_retry_s
        for attempt in itertools.count(1):
            try:
                return await step()
            except _SETUP_RETRYABLE as exc:
                if self._refused:  # e.g. a permissions violation: no retry will fix it
                    raise StoreError(self._refused[-1]) from None
                pause = _RETRY_BACKOFF_S[min(attempt, len(_RETRY_BACKOFF_S)) - 1]
                if loop.time() + pause > deadline:
                    raise StoreError(f"{what}: {exc!r}") from exc
                _log.info("%s: %r (retrying)", what, exc)
                await asyncio.sleep(pause)
            except (TimeoutError, nats.errors.Error) as exc:
                raise StoreError(f"{what}: {exc!r}") from exc
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._committer_tasks):
            task.cancel()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._anchor_watch is not None:
            await self._anchor_watch.close()
        if self._nc is not None:
            # Drain (let in-flight callbacks finish), but not for long if the cluster is gone.
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await asyncio.wait_for(self._nc.drain(), self._settings.request_timeout_s)
            if not self._nc.is_closed:
                await self._nc.close()
        self._head_changed.set()

    # --- append ------------------------------------------------------------------------

    async def append(self, events: Sequence[NewEvent]) -> list[AppendOutcome]:
        if not events:
            return []
        for event in events:
            validate_new_event(event)
        unique: dict[str, NewEvent] = {}
        for event in events:
            known = unique.get(event.event_id)
            if known is None:
                unique[event.event_id] = event
            else:
                check_same_content(known, event)
        order = list(unique.values())
        if len(order) > MAX_ATOMIC_BATCH_EVENTS:
            raise InvalidEventError(
                "events", f"{len(order)} events in one batch; at most {MAX_ATOMIC_BATCH_EVENTS}"
            )
        await self._ensure()
        outcomes = await self._append_unique(order)
        by_id = {o.event_id: o for o in outcomes}
        return [by_id[event.event_id] for event in events]

    async def _append_unique(self, order: list[NewEvent]) -> list[AppendOutcome]:
        deadline = asyncio.get_running_loop().time() + self._settings.append_retry_s
        streams = {event.stream for event in order}
        async with self._stream_locks.hold(streams):
            return await self._append_locked(order, streams, deadline)

    async def _append_locked(
        self, order: list[NewEvent], streams: set[str], deadline: float
    ) -> list[AppendOutcome]:
        """Plan, commit, and on a stale head or a transient failure plan again.

        The caller holds the locks of ``streams``: appends to one stream from this adapter
        are decided one after the other (like the SQLite writer), so a batch that continues
        the previous one is judged against the head that batch left.
        """
        loop = asyncio.get_running_loop()
        attempts: set[str] = set()  # batch ids of our own attempts (an ack may have been lost)
        stale = transient = 0
        last_problem = ""
        while True:
            cached = any(stream in self._heads for stream in streams)
            try:
                try:
                    plan = await self._plan(order, attempts)
                except (ChainError, ConflictError):
                    if not cached:
                        raise
                    # The verdict may rest on a head cached before another replica appended:
                    # judge again against the heads the leader has now.
                    for stream in streams:
                        self._heads.pop(stream, None)
                    plan = await self._plan(order, attempts)
                if plan.new:
                    positions = await self._commit(plan, attempts)
                    self._settle(plan, positions)
                result = [o for o in plan.outcomes if o is not None]
                assert len(result) == len(order)
                return result
            except _Stale as exc:
                stale += 1
                last_problem = str(exc)
                for stream in streams:
                    self._heads.pop(stream, None)
                if stale > _MAX_STALE_REPLANS:
                    raise StoreError(
                        f"append gave up after {stale} attempts: other writers kept moving the "
                        f"stream heads ({last_problem})"
                    ) from None
                if stale > 1:
                    await asyncio.sleep(_RETRY_BACKOFF_S[min(stale, len(_RETRY_BACKOFF_S)) - 1])
            except _Transient as exc:
                transient += 1
                last_problem = str(exc)
                for stream in streams:
                    self._heads.pop(stream, None)
                pause = _RETRY_BACKOFF_S[min(transient, len(_RETRY_BACKOFF_S)) - 1]
                if loop.time() + pause > deadline:
                    raise StoreError(
                        f"JetStream did not accept the batch within append_retry_s="
                        f"{self._settings.append_retry_s}s: {last_problem}"
                    ) from None
                await asyncio.sleep(pause)

    async def _plan(self, order: list[NewEvent], attempts: set[str]) -> _Plan:
        """Check every event against its stream head: duplicate, conflict, chain error or new."""
        plan = _Plan(outcomes=[None] * len(order))
        by_stream: dict[str, list[int]] = {}
        for index, event in enumerate(order):
            by_stream.setdefault(event.stream, []).append(index)
        heads = await self._gather([self._head(stream) for stream in by_stream])
        for (stream, indexes), head in zip(by_stream.items(), heads, strict=True):
            anchor = self._book.get(stream)  # as fresh as the head (``_head`` reads both)
            floor = anchor.version if anchor is not None else 0  # below: refused, not looked up
            taken = [order[i].version for i in indexes if floor < order[i].version <= head.version]
            slots = await self._load_slots(stream, taken) if taken else {}
            running_version, running_hash = head.version, head.hash
            in_batch: dict[int, str] = {}
            for index in indexes:
                event = order[index]
                check_after_anchor(event, anchor)  # deleted slots are empty: refuse first
                if event.version <= head.version:
                    slot = slots.get(event.version)
                    if slot is None:
                        raise _Transient(
                            f"stream {stream!r}: version {event.version} not found although "
                            f"the head is version {head.version} (leader change?)"
                        )
                    if slot.event.event_id != event.event_id:
                        raise version_taken(event, slot.event.event_id, head.version)
                    check_same_content(slot.event.as_new_event(), event)
                    plan.outcomes[index] = AppendOutcome(
                        event.event_id,
                        slot.event.global_position,
                        event.version,
                        duplicate=slot.batch_id not in attempts,
                    )
                    continue
                if event.version <= running_version:
                    raise version_taken(event, in_batch.get(event.version, "?"), running_version)
                _check_chain(event, running_version, running_hash)
                running_version, running_hash = event.version, event.hash
                in_batch[event.version] = event.event_id
                if stream not in plan.expectations:
                    plan.expectations[stream] = head
                plan.new.append((index, event))
        return plan

    async def _commit(self, plan: _Plan, attempts: set[str]) -> list[int]:
        """Queue ``plan`` for the next group commit; the stream sequences of ``plan.new``.

        Group commit: plans queued by concurrent appends travel together in one atomic
        batch (up to ``MAX_ATOMIC_BATCH_EVENTS`` messages), so one JetStream commit (on R1:
        one fsync) covers many callers. At most ``max_inflight_batches`` batches are in
        flight; while they are, new plans queue up and form the next, larger group. A refused
        group is refused for each of its members, which then plan again on their own.
        """
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(plan, attempts, future))
        if self._committers < self._settings.max_inflight_batches:
            self._committers += 1
            task = asyncio.get_running_loop().create_task(self._run_committer())
            self._committer_tasks.add(task)
            task.add_done_callback(self._committer_tasks.discard)
        return await future

    async def _run_committer(self) -> None:
        group: list[_Pending] = []
        try:
            while self._pending:
                group = []
                size = 0
                while self._pending:
                    nxt = self._pending[0]
                    if group and size + len(nxt.plan.new) > MAX_ATOMIC_BATCH_EVENTS:
                        break
                    self._pending.popleft()
                    if nxt.future.done():  # its caller was cancelled while it waited
                        continue
                    group.append(nxt)
                    size += len(nxt.plan.new)
                if not group:
                    continue
                batch_id = uuid.uuid4().hex
                for member in group:
                    member.attempts.add(batch_id)
                started = time.perf_counter()
                try:
                    positions = await self._publish([m.plan for m in group], batch_id)
                except (_Stale, _Transient, StoreError) as exc:
                    _log.debug("group commit of %d appends not accepted: %r", len(group), exc)
                    for member in group:
                        if not member.future.done():
                            member.future.set_exception(type(exc)(str(exc)))
                    continue
                _log.debug(
                    "group commit: %d events of %d appends in %.1f ms",
                    len(positions), len(group), (time.perf_counter() - started) * 1000,
                )
                offset = 0
                for member in group:
                    count = len(member.plan.new)
                    if not member.future.done():
                        member.future.set_result(positions[offset : offset + count])
                    offset += count
                self._note_head(positions[-1])
                nc = self._nc
                if nc is not None:
                    await self._announce(nc, positions[-1])
        except BaseException as exc:  # cancelled by close(), or a bug: nobody may hang
            stranded = [*group, *self._pending]
            self._pending.clear()
            for member in stranded:
                if not member.future.done():
                    member.future.set_exception(StoreError(f"commit abandoned: {exc!r}"))
            raise
        finally:
            self._committers -= 1

    async def _publish(self, plans: list[_Plan], batch_id: str) -> list[int]:
        """Send the new events of ``plans`` as one atomic batch; their stream sequences."""
        nc = self._nc
        assert nc is not None
        messages: list[tuple[str, bytes, dict[str, str]]] = []
        recorded_at_ns = self._last_recorded_ns = max(time.time_ns(), self._last_recorded_ns)
        for plan in plans:
            plan.recorded_at_ns = recorded_at_ns
            expected: set[str] = set()
            for _, event in plan.new:
                headers = {_HDR_BATCH_ID: batch_id, _HDR_BATCH_SEQ: str(len(messages) + 1)}
                if event.stream not in expected:
                    expected.add(event.stream)
                    head = plan.expectations[event.stream]
                    headers[_HDR_EXPECTED_SUBJECT_SEQ] = str(head.sequence)
                    headers[_HDR_EXPECTED_SUBJECT] = self._subjects.stream_all(event.stream)
                messages.append(
                    (self._subjects.slot(event.stream, event.version),
                     encode_event(event, recorded_at_ns), headers)
                )
        if len(messages) == 1:
            # One message is atomic by itself: skip the batch protocol (JetStream stages
            # every atomic batch in a temporary store, a fixed cost per batch). The attempt id
            # goes in Nats-Msg-Id, so a retry can recognise its own earlier write.
            headers = messages[0][2]
            del headers[_HDR_BATCH_SEQ]
            headers[_HDR_MSG_ID] = headers.pop(_HDR_BATCH_ID)
        else:
            messages[-1][2][_HDR_BATCH_COMMIT] = "1"
        try:
            for subject, body, headers in messages[:-1]:
                await nc.publish(subject, body, headers=headers)
            subject, body, headers = messages[-1]
            reply = await nc.request(
                subject, body, timeout=self._settings.request_timeout_s, headers=headers
            )
        except (TimeoutError, nats.errors.TimeoutError) as exc:
            raise _Transient(f"no acknowledgement of the batch: {exc!r}") from None
        except nats.errors.NoRespondersError:
            raise _Transient("no JetStream stream leader answered (election?)") from None
        except _CONNECTION_ERRORS as exc:
            if self._closed:
                raise StoreError("the store is closed") from None
            raise _Transient(f"connection problem: {exc!r}") from None
        ack = _json(reply.data)
        error = ack.get("error")
        if error:
            err_code = int(error.get("err_code") or 0)
            description = str(error.get("description") or error)
            if err_code in _STALE_ERRORS:
                raise _Stale(description)
            if int(error.get("code") or 0) >= 500:
                raise _Transient(f"{description} (err_code {err_code})")
            raise StoreError(f"JetStream refused the batch: {description} (err_code {err_code})")
        if ack.get("duplicate"):  # cannot happen (attempt ids are unique); never trust it
            raise _Stale(f"JetStream called attempt {batch_id} a duplicate")
        count = 1 if len(messages) == 1 else int(ack.get("count") or 0)
        last = int(ack.get("seq") or 0)
        if count != len(messages) or last < count:
            raise StoreError(f"JetStream acknowledged {count} of {len(messages)} events ({ack})")
        return list(range(last - count + 1, last + 1))

    def _settle(self, plan: _Plan, positions: list[int]) -> None:
        for (index, event), position in zip(plan.new, positions, strict=True):
            plan.outcomes[index] = AppendOutcome(event.event_id, position, event.version, False)
            self._heads[event.stream] = _Head(event.version, event.hash, position)
            self._remember(_stored(event, position, plan.recorded_at_ns))
        if len(self._heads) > 100_000:  # bound the cache; heads are re-read on demand
            self._heads.clear()

    def _remember(self, event: StoredEvent) -> None:
        """Keep a committed event to answer reads of it (bounded by ``recent_events``)."""
        if self._settings.recent_events <= 0:
            return
        self._recent[event.global_position] = event
        self._recent_order.append(event.global_position)
        while len(self._recent_order) > self._settings.recent_events:
            self._recent.pop(self._recent_order.popleft(), None)

    async def _announce(self, nc: NatsClient, head: int) -> None:
        """Tell other adapters (replicas) the head moved; best effort (they also poll)."""
        with contextlib.suppress(nats.errors.Error):
            await nc.publish(self._subjects.head, str(head).encode())

    async def _head(self, stream: str) -> _Head:
        cached = self._heads.get(stream)
        if cached is not None:
            return cached
        # The last message first, then the anchor: a cut writes its anchor before it purges,
        # so a stream found empty here has its anchor seen below (never a stale genesis).
        found = await self._leader_get_last(self._subjects.stream_all(stream))
        anchor = await self._fresh_anchor(stream)
        sequence = found.event.global_position if found is not None else 0
        if found is not None and (anchor is None or found.event.version > anchor.version):
            head = _Head(found.event.version, found.event.hash, sequence)
        elif anchor is not None:  # cut whole (or its purge pending): chain on the anchor
            head = _Head(anchor.version, anchor.hash, sequence)
        else:
            head = _EMPTY_HEAD
        self._heads[stream] = head
        return head

    async def _fresh_anchor(self, stream: str) -> RetentionAnchor | None:
        """``stream``'s anchor as the bucket's leader has it now (and learnt by the book)."""
        assert self._kv is not None
        try:
            anchor, _ = await load_anchor(self._kv, anchor_key(_stream_tokens(stream)))
        except AnchorUnavailable as exc:
            if self._closed:
                raise StoreError("the store is closed") from None
            raise _Transient(str(exc)) from None
        if anchor is not None:
            self._book.merge(anchor)
        return self._book.get(stream)

    async def _gap_explained(self, first_missing: int, last_missing: int) -> bool:
        """Whether positions ``first_missing..last_missing`` were deleted by retention (the
        anchors are read again before saying no: another replica may have cut)."""
        if self._book.explains_gap(last_missing):
            return True
        await self.anchors()
        return self._book.explains_gap(last_missing)

    async def _load_slots(self, stream: str, versions: list[int]) -> dict[int, _Slot]:
        semaphore = asyncio.Semaphore(_SLOT_LOOKUP_CONCURRENCY)

        async def one(version: int) -> _Slot | None:
            async with semaphore:
                return await self._leader_get_last(self._subjects.slot(stream, version))

        found = await self._gather([one(v) for v in versions])
        return {v: slot for v, slot in zip(versions, found, strict=True) if slot is not None}

    async def _leader_get_last(self, subject: str) -> _Slot | None:
        """The last message on ``subject`` read from the stream leader (never a lagging copy)."""
        nc = self._nc
        assert nc is not None
        request = json.dumps({"last_by_subj": subject}).encode()
        api = f"$JS.API.STREAM.MSG.GET.{self._settings.stream}"
        try:
            reply = await nc.request(api, request, timeout=self._settings.request_timeout_s)
        except _CONNECTION_ERRORS as exc:
            if self._closed:
                raise StoreError("the store is closed") from None
            raise _Transient(f"reading {subject}: {exc!r}") from None
        data = _json(reply.data)
        error = data.get("error")
        if error:
            if int(error.get("err_code") or 0) == _ERR_NO_MESSAGE_FOUND or error.get("code") == 404:
                return None
            if int(error.get("code") or 0) >= 500:
                raise _Transient(f"reading {subject}: {error}")
            raise StoreError(f"reading {subject}: {error}")
        message = data["message"]
        body = base64.b64decode(message.get("data") or "")
        headers = (
            _parse_header_block(base64.b64decode(message["hdrs"])) if message.get("hdrs") else {}
        )
        event = decode_event(body, int(message["seq"]))
        return _Slot(event, headers.get(_HDR_BATCH_ID) or headers.get(_HDR_MSG_ID, ""))

    async def _gather(self, jobs: list[Awaitable[_T]]) -> list[_T]:
        return list(await asyncio.gather(*jobs))

    # --- reads -------------------------------------------------------------------------

    async def read_stream(
        self, stream: str, from_version: int = 1, limit: int = DEFAULT_READ_LIMIT
    ) -> list[StoredEvent]:
        check_read_limit(limit)
        await self._ensure()
        try:
            anchor = await self._fresh_anchor(stream)  # versions at or below it were deleted
        except _Transient as exc:  # reads are not retried here: the caller may ask again
            raise StoreError(str(exc)) from None
        start_version = max(from_version, 1, anchor.version + 1 if anchor is not None else 1)
        first = await self._leader_get_last(self._subjects.slot(stream, start_version))
        if first is None:
            return []
        head = await self._leader_get_last(self._subjects.stream_all(stream))
        last_version = head.event.version if head is not None else start_version
        wanted = min(limit, last_version - start_version + 1)
        events = await self._scan(
            first.event.global_position, wanted, self._subjects.stream_all(stream),
            lambda event: event.stream == stream,
        )
        # Versions must follow on; a lagging replica may have ended early (then: retried).
        for offset, event in enumerate(events):
            if event.version != start_version + offset:
                raise StoreError(
                    f"stream {stream!r}: expected version {start_version + offset} at position "
                    f"{event.global_position}, found {event.version}"
                )
        return events

    async def read_all(
        self,
        from_position: int = 1,
        limit: int = DEFAULT_READ_LIMIT,
        filter: EventFilter = NO_FILTER,
    ) -> list[StoredEvent]:
        check_read_limit(limit)
        await self._ensure()
        if from_position > _MAX_SEQUENCE:  # JetStream would call the request malformed
            return []
        return await self._scan(
            max(from_position, 1),
            limit,
            self._subjects.filter_for(filter),
            None if filter == NO_FILTER else filter.matches,
        )

    async def _scan(
        self,
        start: int,
        limit: int,
        subject: str | None,
        keep: Callable[[StoredEvent], bool] | None,
    ) -> list[StoredEvent]:
        """Events from position ``start`` on that are on ``subject`` and pass ``keep``.

        Events this adapter committed recently come from memory; the rest from direct-get
        batches. When a batch ends early, the leader decides whether that was the end of the
        log or a lagging replica (then it asks again). ``keep`` must select no event outside
        ``subject`` (the server-side filter); it may select fewer.
        """
        found: list[StoredEvent] = []
        next_seq = start
        retries = 0
        book = self._book  # events at or below an anchor are hidden until purged
        while len(found) < limit:
            remembered = self._recent.get(next_seq)
            if remembered is not None:
                while remembered is not None and len(found) < limit:
                    if (keep is None or keep(remembered)) and not (book and book.hides(remembered)):
                        found.append(remembered)
                    next_seq += 1
                    remembered = self._recent.get(next_seq)
                continue
            want = self._settings.read_batch if keep is not None else limit - len(found)
            batch, pending = await self._direct_batch(
                next_seq, want, subject, with_sequences=next_seq <= book.highest_position
            )
            for event in batch:
                if subject is None and event.global_position != next_seq and not (
                    await self._gap_explained(next_seq, event.global_position - 1)
                ):
                    raise StoreError(
                        f"gap in the log: positions {next_seq}..{event.global_position - 1} are "
                        f"missing and no retention anchor reaches them (the highest is at "
                        f"position {book.highest_position})"
                    )
                next_seq = event.global_position + 1
                if (keep is None or keep(event)) and not (book and book.hides(event)):
                    found.append(event)
                    if len(found) == limit:
                        return found
            if batch and pending:
                continue  # the responder has more; keep going
            # The responder has nothing more. Not the end if this adapter knows of a later
            # position (it appended it, or was told), unless retention may have deleted the
            # newest positions (then the leader's last message settles it); else on R1 the
            # responder is the leader, which settles it; on R3 it may be a lagging follower:
            # the leader decides.
            tail_may_be_cut = bool(book) or retries >= 3
            if next_seq <= self._head_seen and subject is None:
                if tail_may_be_cut and not await self._leader_has_after(
                    self._subjects.events, next_seq
                ):
                    return found
            elif not self._replicated:
                return found
            elif subject is None:
                if tail_may_be_cut:
                    if not await self._leader_has_after(self._subjects.events, next_seq):
                        return found
                elif next_seq > await self.head_position():
                    return found
            elif not await self._leader_has_after(subject, next_seq):
                return found
            retries += 1
            if retries > _STALE_READ_RETRIES:
                raise StoreError(
                    f"the replica answering reads stays behind the leader at position "
                    f"{next_seq - 1}"
                )
            await asyncio.sleep(_STALE_READ_PAUSE_S)
        return found

    async def _leader_has_after(self, subject: str, sequence: int) -> bool:
        slot = await self._leader_get_last(subject)
        return slot is not None and slot.event.global_position >= sequence

    async def _direct_batch(
        self, start: int, batch: int, subject: str | None, *, with_sequences: bool = False
    ) -> tuple[list[StoredEvent], int]:
        """One batched direct get: (events from ``start``, messages the responder has left).

        Without a subject filter (and unless ``with_sequences``) the messages come without
        headers (``no_hdr``: nothing to parse per message); their positions follow from
        ``start``, and the end-of-batch marker's last sequence proves there was no gap (if
        there was one, e.g. retention deleted positions, the batch is asked again with
        headers). With a filter or ``with_sequences`` each message carries its sequence.
        """
        nc = self._nc
        assert nc is not None
        loop = asyncio.get_running_loop()
        done: asyncio.Future[dict[str, str]] = loop.create_future()
        raw: list[Msg] = []

        async def collect(msg: Msg) -> None:
            status = msg.headers.get("Status") if msg.headers else None
            if status is None:
                raw.append(msg)
            elif not done.done():
                done.set_result(dict(msg.headers or {}))

        request: dict[str, Any] = {
            "seq": start,
            "batch": batch,
            "max_bytes": DEFAULT_READ_MAX_BYTES,
        }
        if subject is not None:
            request["next_by_subj"] = subject
        elif not with_sequences:
            request["no_hdr"] = True
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, cb=collect)
        try:
            await nc.publish(
                f"$JS.API.DIRECT.GET.{self._settings.stream}",
                json.dumps(request).encode(),
                reply=inbox,
            )
            try:
                end = await asyncio.wait_for(done, self._settings.request_timeout_s)
            except TimeoutError:
                raise StoreError(
                    f"reading from position {start}: no answer within "
                    f"{self._settings.request_timeout_s}s"
                ) from None
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        status = end.get("Status", "")
        if status == "404":
            return [], 0
        if status != "204":
            raise StoreError(f"reading from position {start}: JetStream answered {end}")
        pending = int(end.get("Nats-Num-Pending") or 0)
        if subject is not None or with_sequences:
            headers = [msg.headers or {} for msg in raw]
            return [
                decode_event(msg.data, int(h["Nats-Sequence"]))
                for msg, h in zip(raw, headers, strict=True)
            ], pending
        last = int(end.get("Nats-Last-Sequence") or 0)
        if raw and last != start + len(raw) - 1:  # a gap: which positions? (``_scan`` judges)
            return await self._direct_batch(start, batch, None, with_sequences=True)
        return [decode_event(msg.data, start + i) for i, msg in enumerate(raw)], pending

    async def head_position(self) -> int:
        await self._ensure()
        info = await self._stream_info({})
        head = int(info["state"]["last_seq"])
        self._note_head(head)
        return head

    async def _stream_info(self, request: dict[str, Any]) -> dict[str, Any]:
        nc = self._nc
        assert nc is not None
        api = f"$JS.API.STREAM.INFO.{self._settings.stream}"
        try:
            reply = await nc.request(
                api, json.dumps(request).encode(), timeout=self._settings.request_timeout_s
            )
        except (TimeoutError, nats.errors.Error) as exc:
            raise StoreError(f"stream info of {self._settings.stream!r}: {exc!r}") from exc
        data = _json(reply.data)
        if data.get("error"):
            raise StoreError(f"stream info of {self._settings.stream!r}: {data['error']}")
        return data

    async def streams(self) -> list[str]:
        await self._ensure()
        names: list[str] = []
        offset = 0
        while True:
            info = await self._stream_info(
                {"subjects_filter": self._subjects.first_versions(), "offset": offset}
            )
            subjects: dict[str, int] = info["state"].get("subjects") or {}
            names.extend(self._subjects.stream_of(subject) for subject in subjects)
            offset += len(subjects)
            total = int(info.get("total") or 0)
            if not subjects or offset >= total:
                break
        # A stream cut whole has no version 1 any more; its anchor keeps it listed.
        return sorted(set(names) | set(await self.anchors()))

    # --- checkpoints -------------------------------------------------------------------

    async def anchors(self) -> dict[str, RetentionAnchor]:
        await self._ensure()
        assert self._kv is not None and self._nc is not None
        stored = await load_all_anchors(self._nc, self._kv, self._settings.checkpoint_bucket,
                                        self._settings.request_timeout_s)
        for anchor in stored.values():
            self._book.merge(anchor)
        return stored

    async def anchor(self, stream: str) -> RetentionAnchor | None:
        """From the anchor book (loaded at connect, kept current by the bucket watcher): no
        request per call, so ReadStream can answer every caller its stream's anchor."""
        await self._ensure()
        return self._book.get(stream)

    async def cut(self, stream: str, through_version: int, cut_at_ns: int) -> RetentionAnchor:
        """Anchor first, then purge the prefix (``sidecar.eventlog.nats_retention``)."""
        if through_version < 1:
            raise ValueError(f"through_version: must be >= 1, got {through_version}")
        await self._ensure()
        assert self._kv is not None and self._nc is not None
        async with self._stream_locks.hold([stream]):  # this adapter's appends wait
            try:
                return await cut_stream(
                    kv=self._kv, nc=self._nc, book=self._book, stream=stream,
                    key=anchor_key(_stream_tokens(stream)), js_stream=self._settings.stream,
                    subject=self._subjects.stream_all(stream), purge_allowed=self._purge_allowed,
                    through_version=through_version, cut_at_ns=cut_at_ns,
                    timeout_s=self._settings.request_timeout_s,
                    read_version=lambda v: self._leader_event(self._subjects.slot(stream, v)),
                    read_last=lambda: self._leader_event(self._subjects.stream_all(stream)),
                )
            except _Transient as exc:
                raise StoreError(f"cutting stream {stream!r}: {exc}") from None
            finally:
                self._heads.pop(stream, None)  # re-read: a cut whole has no last message

    async def _leader_event(self, subject: str) -> StoredEvent | None:
        slot = await self._leader_get_last(subject)
        return slot.event if slot is not None else None

    async def save_checkpoint(self, name: str, position: int, state: bytes) -> None:
        if not name:
            raise ValueError("name: a checkpoint needs a name")
        if position < 0:
            raise ValueError(f"position: must be >= 0, got {position}")
        await self._ensure()
        kv = self._kv
        assert kv is not None
        key = _token(name)
        state = bytes(state)
        limit = self._max_payload - _CHUNK_HEADROOM_BYTES
        try:
            if 9 + len(state) <= limit:
                await kv.put(key, _CHECKPOINT_INLINE + struct.pack(">Q", position) + state)
                return
            # Too big for one message: chunks under a fresh generation, then the manifest
            # (the commit point), then the previous generation's chunks are deleted.
            previous = await self._manifest(kv, key)
            generation = uuid.uuid4().hex
            chunks = [state[i : i + limit] for i in range(0, len(state), limit)]
            for number, chunk in enumerate(chunks):
                await kv.put(f"{key}.{generation}.{number}", chunk)
            manifest = {
                "position": position,
                "generation": generation,
                "chunks": len(chunks),
                "sha256": hashlib.sha256(state).hexdigest(),
            }
            await kv.put(key, _CHECKPOINT_CHUNKED + json.dumps(manifest).encode())
            if previous is not None:
                for number in range(int(previous["chunks"])):
                    with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                        await kv.purge(f"{key}.{previous['generation']}.{number}")
        except (TimeoutError, nats.errors.Error) as exc:
            raise StoreError(f"saving checkpoint {name!r}: {exc!r}") from exc

    async def _manifest(self, kv: KeyValue, key: str) -> dict[str, Any] | None:
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        value = entry.value or b""
        if value[:1] == _CHECKPOINT_CHUNKED:
            manifest: dict[str, Any] = json.loads(value[1:])
            return manifest
        return None

    async def load_checkpoint(self, name: str) -> tuple[int, bytes] | None:
        await self._ensure()
        kv = self._kv
        assert kv is not None
        key = _token(name)
        try:
            try:
                entry = await kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                return None
            value = entry.value or b""
            if value[:1] == _CHECKPOINT_INLINE and len(value) >= 9:
                return struct.unpack_from(">Q", value, 1)[0], value[9:]
            if value[:1] != _CHECKPOINT_CHUNKED:
                raise StoreError(f"checkpoint {name!r}: unknown encoding")
            manifest = json.loads(value[1:])
            parts: list[bytes] = []
            for number in range(int(manifest["chunks"])):
                chunk = await kv.get(f"{key}.{manifest['generation']}.{number}")
                parts.append(chunk.value or b"")
        except (TimeoutError, nats.errors.Error) as exc:
            raise StoreError(f"loading checkpoint {name!r}: {exc!r}") from exc
        state = b"".join(parts)
        if hashlib.sha256(state).hexdigest() != manifest["sha256"]:
            raise StoreError(f"checkpoint {name!r}: chunks do not match the manifest digest")
        return int(manifest["position"]), state

    # --- following the log --------------------------------------------------------------

    async def follow(
        self,
        from_position: int,
        filter: EventFilter = NO_FILTER,
        *,
        page_events: int = DEFAULT_READ_LIMIT,
        wait_s: float = DEFAULT_FOLLOW_WAIT_S,
    ) -> AsyncGenerator[FollowBatch, None]:
        """Catch-up with ``read_all`` pages (batched direct gets, recent commits from memory),
        then live from a JetStream ordered consumer starting at the catch-up's cursor.

        The consumer (ephemeral, in memory, no acks, flow-controlled) starts exactly at the
        next position not yet scanned, so the switch cannot skip or repeat an event, and it
        delivers in stream order; nats-py recreates it where it left off when it sees a gap
        or misses its heartbeats. Messages are taken off the subscription only when pulled,
        and JetStream's flow control stops sending while they wait: a follower that stops
        pulling leaves the backlog in the stream. A service/instance filter is a subject
        filter on the consumer (so ``scanned_to`` only passes events it was sent); the rest
        of the filter is applied here.
        """
        if from_position < 1:
            raise ValueError(f"from_position: must be >= 1, got {from_position}")
        cursor = from_position
        async for batch in read_until_head(self, from_position, filter, page_events):
            cursor = batch.scanned_to
            yield batch
        js = await self._ensure()
        keep = None if filter == NO_FILTER else filter.matches
        subscription = await self._ordered_consumer(
            js, self._subjects.filter_for(filter) or self._subjects.events, cursor
        )
        try:
            while True:
                try:
                    msg = await subscription.next_msg(timeout=wait_s)
                except nats.errors.TimeoutError:
                    yield FollowBatch((), cursor, max(self._head_seen, cursor - 1), True)
                    continue
                except nats.errors.Error as exc:
                    raise StoreError(f"following from position {cursor}: {exc!r}") from exc
                events: list[StoredEvent] = []
                while True:
                    sequence = _stream_sequence(msg.reply)
                    if sequence >= cursor:  # below: re-sent after a consumer reset; had it
                        if keep is None and sequence != cursor and not (
                            await self._gap_explained(cursor, sequence - 1)
                        ):
                            raise StoreError(
                                f"following: position {sequence} arrived where {cursor} was "
                                "due (a message was lost on the way)"
                            )
                        event = decode_event(msg.data, sequence)
                        cursor = sequence + 1
                        if (keep is None or keep(event)) and not self._book.hides(event):
                            events.append(event)
                    if len(events) >= page_events or not subscription.pending_msgs:
                        break
                    msg = await subscription.next_msg(timeout=None)
                yield FollowBatch(tuple(events), cursor, max(self._head_seen, cursor - 1), True)
        finally:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await subscription.unsubscribe()

    async def _ordered_consumer(
        self, js: JetStreamContext, subject: str, start: int
    ) -> JetStreamContext.PushSubscription:
        try:
            return await js.subscribe(
                subject,
                stream=self._settings.stream,
                ordered_consumer=True,
                idle_heartbeat=DEFAULT_FOLLOW_HEARTBEAT_S,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
                ),
            )
        except (TimeoutError, nats.errors.Error) as exc:
            raise StoreError(
                f"creating an ordered consumer on {subject} from position {start}: {exc!r}"
            ) from exc

    # --- waiting for appends -------------------------------------------------------------

    async def wait_for_append(self, after_position: int, timeout_s: float) -> int:
        await self._ensure()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout_s, 0.0)
        if self._head_seen <= after_position:
            with contextlib.suppress(StoreError):
                await self.head_position()
        while self._head_seen <= after_position and not self._closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            changed = self._head_changed
            self._waiters += 1
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                break
            finally:
                self._waiters -= 1
        return self._head_seen

    def _note_head(self, head: int) -> None:
        if head > self._head_seen:
            self._head_seen = head
            changed, self._head_changed = self._head_changed, asyncio.Event()
            changed.set()

    async def _on_head_notice(self, msg: Msg) -> None:
        with contextlib.suppress(ValueError):
            self._note_head(int(msg.data))

    async def _poll_head(self) -> None:
        """While anyone waits, ask the leader for the head every ``head_poll_interval_s``."""
        while not self._closed:
            await asyncio.sleep(self._settings.head_poll_interval_s)
            if self._waiters:
                with contextlib.suppress(StoreError):
                    await self.head_position()


# --- helpers ---------------------------------------------------------------------------------


async def _log_nats_error(exc: Exception) -> None:
    _log.debug("nats client: %r", exc)


async def _log_reconnected() -> None:
    _log.info("event store: reconnected to NATS")


def _stream_sequence(reply: str) -> int:
    """The stream sequence in a JetStream delivery's reply subject:
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>``,
    or the form with ``<domain>.<account hash>`` after ``ACK`` and a trailing token (cheaper
    than ``Msg.metadata``, which builds several objects per message)."""
    tokens = reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5])
    if len(tokens) >= 11:
        return int(tokens[7])
    raise StoreError(f"JetStream delivered a message with an unexpected reply {reply[:200]!r}")


def _json(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, binascii.Error):
        raise StoreError(f"JetStream sent an unreadable reply: {data[:200]!r}") from None
    if not isinstance(value, dict):
        raise StoreError(f"JetStream sent an unexpected reply: {data[:200]!r}")
    return value


def _stored(event: NewEvent, position: int, recorded_at_ns: int) -> StoredEvent:
    return StoredEvent(
        event_id=event.event_id,
        stream=event.stream,
        version=event.version,
        type=event.type,
        occurred_at_ns=event.occurred_at_ns,
        trace_id=event.trace_id,
        payload=event.payload,
        prev_hash=event.prev_hash,
        hash=event.hash,
        service=event.service,
        instance=event.instance,
        upstream=event.upstream,
        global_position=position,
        recorded_at_ns=recorded_at_ns,
    )


def _check_chain(event: NewEvent, head_version: int, head_hash: bytes) -> None:
    where = f"stream {event.stream!r} version {event.version}"
    if event.version != head_version + 1:
        raise ChainError(
            f"stream {event.stream!r}: event {event.event_id} has version {event.version} but "
            f"the next version is {head_version + 1} (gap)",
            stream=event.stream, version=event.version, event_id=event.event_id,
        )
    if event.prev_hash != head_hash:
        raise ChainError(
            f"{where}: prev_hash {event.prev_hash.hex()} is not the hash of version "
            f"{head_version} ({head_hash.hex()})",
            stream=event.stream, version=event.version, event_id=event.event_id,
        )
    if chain.hash_of(event) != event.hash:
        raise ChainError(
            f"{where}: hash {event.hash.hex()} is not the SHA-256 of the event's canonical bytes",
            stream=event.stream, version=event.version, event_id=event.event_id,
        )
