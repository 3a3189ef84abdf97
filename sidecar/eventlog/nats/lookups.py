"""Single JetStream requests the reads, the appends and the cuts share.

The last message on a subject from the stream leader (never a lagging copy), one batched
direct get (any replica may answer), stream info and the head, and a stream's anchor as the
bucket's leader has it now.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Awaitable
from typing import Any, TypeVar

import nats.errors
from nats.aio.msg import Msg

from sidecar.eventlog.nats.codec import (
    HDR_BATCH_ID,
    HDR_MSG_ID,
    Slot,
    decode_event,
    json_reply,
    parse_header_block,
)
from sidecar.eventlog.nats.connection import JetStreamConnection
from sidecar.eventlog.nats.errors import CONNECTION_ERRORS, ERR_NO_MESSAGE_FOUND, TransientFailure
from sidecar.eventlog.nats.retention import AnchorUnavailable, anchor_key, load_anchor
from sidecar.eventlog.nats.settings import DEFAULT_READ_MAX_BYTES
from sidecar.eventlog.nats.subjects import stream_tokens
from sidecar.eventlog.port import RetentionAnchor, StoredEvent, StoreError

_T = TypeVar("_T")


class JetStreamLookups(JetStreamConnection):
    """One request each: leader gets, direct-get batches, stream info, fresh anchors."""

    async def _leader_get_last(self, subject: str) -> Slot | None:
        """The last message on ``subject`` read from the stream leader (never a lagging copy)."""
        nc = self._nc
        assert nc is not None
        request = json.dumps({"last_by_subj": subject}).encode()
        api = f"$JS.API.STREAM.MSG.GET.{self._settings.stream}"
        try:
            reply = await nc.request(api, request, timeout=self._settings.request_timeout_s)
        except CONNECTION_ERRORS as exc:
            if self._closed:
                raise StoreError("the store is closed") from None
            raise TransientFailure(f"reading {subject}: {exc!r}") from None
        data = json_reply(reply.data)
        error = data.get("error")
        if error:
            if int(error.get("err_code") or 0) == ERR_NO_MESSAGE_FOUND or error.get("code") == 404:
                return None
            if int(error.get("code") or 0) >= 500:
                raise TransientFailure(f"reading {subject}: {error}")
            raise StoreError(f"reading {subject}: {error}")
        message = data["message"]
        body = base64.b64decode(message.get("data") or "")
        headers = (
            parse_header_block(base64.b64decode(message["hdrs"])) if message.get("hdrs") else {}
        )
        event = decode_event(body, int(message["seq"]))
        return Slot(event, headers.get(HDR_BATCH_ID) or headers.get(HDR_MSG_ID, ""))

    async def _leader_event(self, subject: str) -> StoredEvent | None:
        slot = await self._leader_get_last(subject)
        return slot.event if slot is not None else None

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
        data = json_reply(reply.data)
        if data.get("error"):
            raise StoreError(f"stream info of {self._settings.stream!r}: {data['error']}")
        return data

    async def _fresh_anchor(self, stream: str) -> RetentionAnchor | None:
        """``stream``'s anchor as the bucket's leader has it now (and learnt by the book)."""
        assert self._kv is not None
        try:
            anchor, _ = await load_anchor(self._kv, anchor_key(stream_tokens(stream)))
        except AnchorUnavailable as exc:
            if self._closed:
                raise StoreError("the store is closed") from None
            raise TransientFailure(str(exc)) from None
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

    async def _gather(self, jobs: list[Awaitable[_T]]) -> list[_T]:
        return list(await asyncio.gather(*jobs))
