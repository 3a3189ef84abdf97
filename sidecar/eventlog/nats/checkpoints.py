"""Projection checkpoints in the KV bucket, and the retention anchors kept beside them.

A checkpoint too big for one message is written as chunks under a fresh generation, then the
manifest (the commit point); ``cut`` writes the anchor before purging (``retention``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
import uuid
from typing import Any, Final

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from sidecar.eventlog.nats.errors import TransientFailure
from sidecar.eventlog.nats.lookups import JetStreamLookups
from sidecar.eventlog.nats.retention import anchor_key, cut_stream, load_all_anchors
from sidecar.eventlog.nats.subjects import stream_tokens, subject_token
from sidecar.eventlog.port import RetentionAnchor, StoreError

_CHECKPOINT_INLINE: Final = b"\x00"
_CHECKPOINT_CHUNKED: Final = b"\x01"
_CHUNK_HEADROOM_BYTES: Final = 4096


class Checkpoints(JetStreamLookups):
    """Checkpoints, anchors and ``cut`` (see the package docstring, **Retention**)."""

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
        """Anchor first, then purge the prefix (``sidecar.eventlog.nats.retention``)."""
        if through_version < 1:
            raise ValueError(f"through_version: must be >= 1, got {through_version}")
        await self._ensure()
        assert self._kv is not None and self._nc is not None
        async with self._stream_locks.hold([stream]):  # this adapter's appends wait
            try:
                return await cut_stream(
                    kv=self._kv, nc=self._nc, book=self._book, stream=stream,
                    key=anchor_key(stream_tokens(stream)), js_stream=self._settings.stream,
                    subject=self._subjects.stream_all(stream), purge_allowed=self._purge_allowed,
                    through_version=through_version, cut_at_ns=cut_at_ns,
                    timeout_s=self._settings.request_timeout_s,
                    read_version=lambda v: self._leader_event(self._subjects.slot(stream, v)),
                    read_last=lambda: self._leader_event(self._subjects.stream_all(stream)),
                )
            except TransientFailure as exc:
                raise StoreError(f"cutting stream {stream!r}: {exc}") from None
            finally:
                self._heads.pop(stream, None)  # re-read: a cut whole has no last message

    async def save_checkpoint(self, name: str, position: int, state: bytes) -> None:
        if not name:
            raise ValueError("name: a checkpoint needs a name")
        if position < 0:
            raise ValueError(f"position: must be >= 0, got {position}")
        await self._ensure()
        kv = self._kv
        assert kv is not None
        key = subject_token(name)
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
        key = subject_token(name)
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
