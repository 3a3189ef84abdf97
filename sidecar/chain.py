"""The per-stream hash chain: a wire contract shared by the sidecar (producer) and the event log.

Every event carries ``hash = SHA-256(canonical_bytes(...))`` and the ``prev_hash`` of the event
before it in its stream (``GENESIS_HASH`` for version 1). The producer computes both; the event
log recomputes and refuses an append whose chain is broken, and ``verify`` walks the chain again.

Canonical bytes, in this order (all integers big-endian, every variable-length field prefixed
with its length as an unsigned 32-bit integer, strings encoded as UTF-8)::

    DOMAIN_TAG                      b"sidecar.v1.Event\\x00" (fixed; versioned with the format)
    prev_hash                       exactly 32 bytes
    stream                          u32 length + bytes
    version                         u64
    event_id                        u32 length + bytes
    type                            u32 length + bytes
    occurred_at_ns                  i64 (nanoseconds since the Unix epoch)
    trace_id                        u32 length + bytes
    payload                         u32 length + bytes (the typed payload message serialized
                                    with ``SerializeToString(deterministic=True)``)

Length prefixes and fixed-width integers make the encoding unambiguous: no two different field
tuples give the same bytes. Changing anything here breaks every stored chain: add a new domain
tag instead.

Pure functions, no I/O, safe from any thread.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Protocol

from google.protobuf.message import Message

from sidecar.v1 import events_pb2

GENESIS_HASH: bytes = bytes(32)
"""``prev_hash`` of version 1 of every stream."""

HASH_SIZE_BYTES = 32
DOMAIN_TAG = b"sidecar.v1.Event\x00"

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")
_MAX_U32 = 2**32 - 1


class Chained(Protocol):
    """Anything carrying the hashed fields (``NewEvent``, ``StoredEvent``, a producer record)."""

    @property
    def prev_hash(self) -> bytes: ...
    @property
    def stream(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def event_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def occurred_at_ns(self) -> int: ...
    @property
    def trace_id(self) -> str: ...
    @property
    def payload(self) -> bytes: ...


def canonical_bytes(
    *,
    prev_hash: bytes,
    stream: str,
    version: int,
    event_id: str,
    type: str,
    occurred_at_ns: int,
    trace_id: str,
    payload: bytes,
) -> bytes:
    """The exact bytes that ``compute_hash`` digests (see the module docstring).

    Raises ``ValueError`` naming the field when a value cannot be encoded (``prev_hash`` not
    32 bytes, ``version`` outside u64, ``occurred_at_ns`` outside i64, a field over 4 GiB).
    """
    if len(prev_hash) != HASH_SIZE_BYTES:
        raise ValueError(f"prev_hash: must be {HASH_SIZE_BYTES} bytes, got {len(prev_hash)}")
    if not 0 <= version < 2**64:
        raise ValueError(f"version: {version} does not fit an unsigned 64-bit integer")
    if not -(2**63) <= occurred_at_ns < 2**63:
        raise ValueError(f"occurred_at_ns: {occurred_at_ns} does not fit a signed 64-bit integer")
    stream_b, event_id_b, type_b, trace_id_b = (
        stream.encode(),
        event_id.encode(),
        type.encode(),
        trace_id.encode(),
    )
    for name, data in (
        ("stream", stream_b),
        ("event_id", event_id_b),
        ("type", type_b),
        ("trace_id", trace_id_b),
        ("payload", payload),
    ):
        if len(data) > _MAX_U32:
            raise ValueError(f"{name}: {len(data)} bytes is too long to hash (max {_MAX_U32})")
    return b"".join(
        (
            DOMAIN_TAG,
            prev_hash,
            _U32.pack(len(stream_b)),
            stream_b,
            _U64.pack(version),
            _U32.pack(len(event_id_b)),
            event_id_b,
            _U32.pack(len(type_b)),
            type_b,
            _I64.pack(occurred_at_ns),
            _U32.pack(len(trace_id_b)),
            trace_id_b,
            _U32.pack(len(payload)),
            payload,
        )
    )


def compute_hash(
    *,
    prev_hash: bytes,
    stream: str,
    version: int,
    event_id: str,
    type: str,
    occurred_at_ns: int,
    trace_id: str,
    payload: bytes,
) -> bytes:
    """SHA-256 (32 bytes) of ``canonical_bytes`` of the given fields."""
    return hashlib.sha256(
        canonical_bytes(
            prev_hash=prev_hash,
            stream=stream,
            version=version,
            event_id=event_id,
            type=type,
            occurred_at_ns=occurred_at_ns,
            trace_id=trace_id,
            payload=payload,
        )
    ).digest()


def hash_of(event: Chained) -> bytes:
    """``compute_hash`` over the hashed fields of ``event`` (its own ``hash`` is ignored)."""
    return compute_hash(
        prev_hash=event.prev_hash,
        stream=event.stream,
        version=event.version,
        event_id=event.event_id,
        type=event.type,
        occurred_at_ns=event.occurred_at_ns,
        trace_id=event.trace_id,
        payload=event.payload,
    )


_RECORD_TAG = b"sidecar.v1.Record\x00"


def compute_record_hash(*, hash: bytes, global_position: int, recorded_at_ns: int) -> bytes:
    """SHA-256 sealing the store-assigned fields of a stored event to its chain hash.

    The producer's chain cannot cover ``global_position`` and ``recorded_at_ns`` (the store
    assigns them), so a store that keeps this seal lets ``verify`` detect a change there too.
    """
    if len(hash) != HASH_SIZE_BYTES:
        raise ValueError(f"hash: must be {HASH_SIZE_BYTES} bytes, got {len(hash)}")
    return hashlib.sha256(
        _RECORD_TAG + hash + _U64.pack(global_position) + _I64.pack(recorded_at_ns)
    ).digest()


# --- the same chain over the protobuf envelope (what the producer builds and ships) ---


def payload_bytes(event: events_pb2.Event) -> bytes:
    """The hashed payload bytes of an envelope: its set ``payload`` oneof member serialized with
    ``deterministic=True`` (``b""`` when none is set)."""
    which = event.WhichOneof("payload")
    if which is None:
        return b""
    message: Message = getattr(event, which)
    data: bytes = message.SerializeToString(deterministic=True)
    return data


def timestamp_ns(event: events_pb2.Event) -> int:
    """``occurred_at`` of an envelope in nanoseconds since the Unix epoch."""
    return int(event.occurred_at.seconds) * 1_000_000_000 + int(event.occurred_at.nanos)


def proto_hash(event: events_pb2.Event) -> bytes:
    """``compute_hash`` of an envelope (its ``hash`` and store-assigned fields are ignored).

    Producers set ``event.hash = proto_hash(event)`` after filling every other field.
    """
    return compute_hash(
        prev_hash=bytes(event.prev_hash),
        stream=event.stream,
        version=int(event.version),
        event_id=event.event_id,
        type=event.type,
        occurred_at_ns=timestamp_ns(event),
        trace_id=event.trace_id,
        payload=payload_bytes(event),
    )
