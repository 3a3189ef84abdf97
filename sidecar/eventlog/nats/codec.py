"""What goes over the wire: the stored body of an event, header names, JetStream replies.

Pure functions (no I/O): the body is a fixed binary layout (``_BODY_HEAD``) so an event reads
back byte for byte as it was appended.
"""

from __future__ import annotations

import binascii
import json
import struct
from dataclasses import dataclass
from typing import Any, Final

from sidecar.eventlog.port import InvalidEventError, NewEvent, StoredEvent, StoreError

FORMAT_VERSION: Final = 1
"""First byte of every stored message body; bump when the encoding changes."""

HDR_BATCH_ID: Final = "Nats-Batch-Id"
HDR_BATCH_SEQ: Final = "Nats-Batch-Sequence"
HDR_BATCH_COMMIT: Final = "Nats-Batch-Commit"
HDR_MSG_ID: Final = "Nats-Msg-Id"
HDR_EXPECTED_SUBJECT_SEQ: Final = "Nats-Expected-Last-Subject-Sequence"
HDR_EXPECTED_SUBJECT: Final = "Nats-Expected-Last-Subject-Sequence-Subject"

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


def parse_header_block(raw: bytes) -> dict[str, str]:
    """``NATS/1.0\\r\\nKey: value\\r\\n...`` (as MSG.GET returns it, base64-decoded) → dict."""
    headers: dict[str, str] = {}
    for line in raw.decode(errors="replace").split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip()] = value.strip()
    return headers


@dataclass(frozen=True, slots=True)
class Slot:
    """A stored event and the atomic batch that wrote it."""

    event: StoredEvent
    batch_id: str


def json_reply(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, binascii.Error):
        raise StoreError(f"JetStream sent an unreadable reply: {data[:200]!r}") from None
    if not isinstance(value, dict):
        raise StoreError(f"JetStream sent an unexpected reply: {data[:200]!r}")
    return value
