"""Retention on the JetStream event log: anchors in the checkpoint bucket, prefix purges.

The port's rules (``sidecar.eventlog.port.anchors``) say a cut deletes a stream prefix and anchors
the stream "at once". JetStream has no transaction spanning a KV put and a stream purge, so
the JetStream adapter (``sidecar.eventlog.nats``) keeps them in this order:

1. **The anchor is written first**, to the checkpoint bucket (key ``=anchor.<svc>.<inst>``,
   the stream's subject tokens; ``=`` is never the start of a checkpoint key, whose keys are
   base64 tokens), with compare-and-set on the key's revision, so two event log replicas
   cutting the same stream can never move its anchor back. The checkpoint bucket is used, not
   a second one, so the NATS permissions docs/nats.md lists stay the same.
2. **Then the prefix is purged**: one ``STREAM.PURGE`` request with the stream's subject filter
   and ``seq`` = the anchor's position + 1 (JetStream removes the filter's messages *below*
   ``seq``: exactly versions 1..anchor, since a stream's versions take increasing positions).
3. **Until the purge is done, reads hide** every event at or below its stream's anchor
   (:class:`AnchorBook`), and appends at or below it are refused (``BeforeAnchorError``). A
   crash between 1 and 2 leaves an anchor whose events are still stored: hidden, refused, and
   purged by the next cut of that stream (a cut at or below the anchor re-sends the purge).
   Every adapter's book is filled at connect and kept current by :class:`AnchorWatch`, so
   another replica's cut is hidden here too; appends read a stream's anchor from the bucket
   *after* its last message, so a stream found empty is never taken for a new one.

Positions retention deleted leave gaps in the stream sequence; a gap is legitimate only at or
below the highest anchor's position (``AnchorBook.explains_gap``), anything else is still an
error. JetStream keeps ``last_seq`` when the newest messages are purged, so positions are never
given again and the head never goes down.

Purging needs a stream created without ``deny_purge``: NatsSettings ``retention=1`` (URL
``?retention=1``). JetStream cannot lift ``deny_purge`` on an existing stream (nats-server 2.15
refuses the update: "stream configuration update can not cancel deny purge", error 10052),
so a stream created without it refuses every cut with :func:`purge_denied` (one line saying
what to do).

Blocking: none; the coroutines run on the adapter's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from sidecar.eventlog.port import RetentionAnchor, StoredEvent, StoreError

__all__ = [
    "ANCHOR_KEY_PREFIX",
    "AnchorBook",
    "AnchorUnavailable",
    "AnchorWatch",
    "anchor_key",
    "cut_stream",
    "decode_anchor",
    "encode_anchor",
    "load_all_anchors",
    "load_anchor",
    "purge_denied",
    "purge_prefix",
    "save_anchor",
]

_log = logging.getLogger(__name__)

ANCHOR_KEY_PREFIX: Final = "=anchor"
"""First token of anchor keys in the checkpoint bucket (checkpoint keys never start with "=")."""
ANCHOR_FORMAT: Final = 1
"""``format`` field of a stored anchor; bump when the encoding changes."""
_ERR_PURGE_NOT_PERMITTED: Final = 10110
"""JetStream: "stream purge not permitted" (the stream has ``deny_purge``)."""
_LOAD_CONCURRENCY: Final = 64
"""Anchor values read at once when listing them all."""
_MAX_ANCHOR_RACES: Final = 20
"""Compare-and-set attempts on one anchor key before a cut gives up (contention bound)."""


def anchor_key(stream_tokens: str) -> str:
    """The bucket key of a stream's anchor, from its subject tokens (``<svc>.<inst>``)."""
    return f"{ANCHOR_KEY_PREFIX}.{stream_tokens}"


def encode_anchor(anchor: RetentionAnchor) -> bytes:
    """JSON (small, readable with ``nats kv get``); the hash in hex."""
    return json.dumps(
        {
            "format": ANCHOR_FORMAT,
            "stream": anchor.stream,
            "version": anchor.version,
            "hash": anchor.hash.hex(),
            "global_position": anchor.global_position,
            "recorded_at_ns": anchor.recorded_at_ns,
            "cut_at_ns": anchor.cut_at_ns,
        },
        separators=(",", ":"),
    ).encode()


def decode_anchor(key: str, raw: bytes) -> RetentionAnchor:
    """Inverse of ``encode_anchor``; ``StoreError`` naming the key if it is not an anchor."""
    try:
        data: dict[str, Any] = json.loads(raw)
        if data.get("format") != ANCHOR_FORMAT:
            raise ValueError(f"unknown format {data.get('format')!r}")
        return RetentionAnchor(
            stream=str(data["stream"]),
            version=int(data["version"]),
            hash=bytes.fromhex(str(data["hash"])),
            global_position=int(data["global_position"]),
            recorded_at_ns=int(data["recorded_at_ns"]),
            cut_at_ns=int(data["cut_at_ns"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"retention anchor {key!r} in the checkpoint bucket is unreadable: "
                         f"{exc}") from None


class AnchorUnavailable(StoreError):
    """The bucket did not answer (no leader yet, an election, a timeout): worth retrying."""


class AnchorBook:
    """The anchors this adapter knows of: which events reads hide, which gaps are legitimate.

    Filled from the bucket (on connect, by ``anchors()``, by every fresh read of one stream's
    anchor) and by this adapter's own cuts; an anchor only ever moves forward. Pure, no I/O.
    """

    def __init__(self) -> None:
        self._by_stream: dict[str, RetentionAnchor] = {}
        self.highest_position = 0
        """The highest position any known anchor stands at (gaps at or below it are cuts)."""

    def __bool__(self) -> bool:
        return bool(self._by_stream)

    def get(self, stream: str) -> RetentionAnchor | None:
        return self._by_stream.get(stream)

    def merge(self, anchor: RetentionAnchor | None) -> RetentionAnchor | None:
        """Learn ``anchor`` unless a later one of its stream is known; the one in force."""
        if anchor is None:
            return None
        known = self._by_stream.get(anchor.stream)
        if known is not None and known.version >= anchor.version:
            return known
        self._by_stream[anchor.stream] = anchor
        self.highest_position = max(self.highest_position, anchor.global_position)
        return anchor

    def hides(self, event: StoredEvent) -> bool:
        """True for an event retention deleted (its purge may not be done yet)."""
        anchor = self._by_stream.get(event.stream)
        return anchor is not None and event.version <= anchor.version

    def explains_gap(self, last_missing: int) -> bool:
        """Whether positions up to ``last_missing`` may be missing: retention deleted them."""
        return last_missing <= self.highest_position

    def snapshot(self) -> dict[str, RetentionAnchor]:
        return dict(self._by_stream)


async def load_anchor(kv: KeyValue, key: str) -> tuple[RetentionAnchor | None, int]:
    """The anchor stored at ``key`` and its revision (0: none), read from the bucket's leader."""
    try:
        entry = await kv.get(key)
    except nats.js.errors.KeyNotFoundError:  # also raised for deleted / purged keys
        return None, 0
    except (TimeoutError, nats.errors.TimeoutError, nats.errors.NoRespondersError,
            nats.js.errors.ServiceUnavailableError) as exc:
        raise AnchorUnavailable(f"reading retention anchor {key!r}: {exc!r}") from exc
    except nats.js.errors.APIError as exc:
        if (exc.code or 0) >= 500:  # e.g. no bucket leader yet (election)
            raise AnchorUnavailable(f"reading retention anchor {key!r}: {exc!r}") from exc
        raise StoreError(f"reading retention anchor {key!r}: {exc!r}") from exc
    except nats.errors.Error as exc:
        raise StoreError(f"reading retention anchor {key!r}: {exc!r}") from exc
    return decode_anchor(key, entry.value or b""), int(entry.revision or 0)


async def load_all_anchors(nc: NatsClient, kv: KeyValue, bucket: str, timeout_s: float
                           ) -> dict[str, RetentionAnchor]:
    """Every stored anchor, by stream, as the bucket's leader has them now.

    The keys come from the bucket stream's subject list (``STREAM.INFO`` with a subject
    filter, paged), then each value from the leader, at most ``_LOAD_CONCURRENCY`` at once.
    (Not a KV watcher: nats-py's "no more values" marker can come before a value already
    under way, so a watcher cannot say when the listing is complete.)"""
    prefix = f"$KV.{bucket}."
    keys: list[str] = []
    offset = 0
    while True:
        request = {"subjects_filter": f"{prefix}{ANCHOR_KEY_PREFIX}.>", "offset": offset}
        try:
            reply = await nc.request(f"$JS.API.STREAM.INFO.KV_{bucket}",
                                     json.dumps(request).encode(), timeout=timeout_s)
            data: dict[str, Any] = json.loads(reply.data)
        except (TimeoutError, nats.errors.Error, ValueError) as exc:
            raise AnchorUnavailable(f"listing retention anchors: {exc!r}") from exc
        if data.get("error"):
            raise StoreError(f"listing retention anchors: {data['error']}")
        subjects: dict[str, int] = (data.get("state") or {}).get("subjects") or {}
        keys.extend(subject[len(prefix):] for subject in subjects)
        offset += len(subjects)
        if not subjects or offset >= int(data.get("total") or 0):
            break
    semaphore = asyncio.Semaphore(_LOAD_CONCURRENCY)

    async def one(key: str) -> RetentionAnchor | None:
        async with semaphore:
            return (await load_anchor(kv, key))[0]

    found = await asyncio.gather(*(one(key) for key in keys))
    return {anchor.stream: anchor for anchor in found if anchor is not None}


class AnchorWatch:
    """Keeps an :class:`AnchorBook` up to date with the anchors other replicas write.

    ``start`` puts every stored anchor in the book (``load_all_anchors``) after starting a KV
    watcher (nats-py: an ordered consumer in memory, recreated where it left off when it
    misses heartbeats) over the anchor keys, which from then on brings each new anchor as it
    is written, typically within milliseconds: another replica's cut hides its prefix here
    (reads from this adapter's memory of its own appends included) while its purge runs.
    The book only moves forward, so the two may overlap in any order.
    """

    def __init__(self, watcher: KeyValue.KeyWatcher, task: asyncio.Task[None]) -> None:
        self._watcher = watcher
        self._task = task

    @classmethod
    async def start(cls, nc: NatsClient, kv: KeyValue, bucket: str, book: AnchorBook,
                    timeout_s: float) -> AnchorWatch:
        try:
            watcher = await kv.watch(f"{ANCHOR_KEY_PREFIX}.>")
        except (TimeoutError, nats.errors.Error) as exc:
            raise StoreError(f"watching retention anchors: {exc!r}") from exc
        task = asyncio.get_running_loop().create_task(cls._follow(watcher, book))
        watch = cls(watcher, task)
        try:
            for anchor in (await load_all_anchors(nc, kv, bucket, timeout_s)).values():
                book.merge(anchor)
        except BaseException:
            await watch.close()
            raise
        return watch

    @staticmethod
    async def _follow(watcher: KeyValue.KeyWatcher, book: AnchorBook) -> None:
        async for entry in watcher:
            if entry is None:  # "no more stored values" (not to be trusted; see above)
                continue
            try:
                _learn(book, entry)
            except StoreError as exc:  # one unreadable key must not blind the adapter
                _log.warning("%s", exc)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await _stop(self._watcher)


def _learn(book: AnchorBook, entry: KeyValue.Entry) -> RetentionAnchor | None:
    if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
        return None
    anchor = decode_anchor(entry.key, entry.value)
    book.merge(anchor)
    return anchor


async def _stop(watcher: KeyValue.KeyWatcher) -> None:
    try:
        await watcher.stop()  # type: ignore[no-untyped-call]
    except (TimeoutError, nats.errors.Error):
        pass  # an ordered consumer in memory; the server drops it when idle


async def save_anchor(kv: KeyValue, key: str, anchor: RetentionAnchor, revision: int) -> bool:
    """Store ``anchor`` if the key is still at ``revision`` (0: absent); False if someone else
    wrote it meanwhile (the caller reads it again and decides again)."""
    try:
        if revision == 0:
            await kv.create(key, encode_anchor(anchor))
        else:
            await kv.update(key, encode_anchor(anchor), last=revision)
    except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError):
        return False
    except nats.js.errors.APIError as exc:
        if exc.err_code == 10071:  # wrong last sequence, reported as a plain API error
            return False
        raise StoreError(f"saving retention anchor {key!r}: {exc!r}") from exc
    except (TimeoutError, nats.errors.Error) as exc:
        raise StoreError(f"saving retention anchor {key!r}: {exc!r}") from exc
    return True


def purge_denied(stream: str) -> StoreError:
    """The one line for a cut on a stream created with ``deny_purge``."""
    return StoreError(
        f"retention cannot delete from JetStream stream {stream!r}: it was created with "
        "deny_purge, which JetStream cannot lift; start on a new stream created with "
        "?retention=1 (e.g. ?stream=NEWNAME&retention=1) or run without retention"
    )


async def purge_prefix(
    nc: NatsClient, stream: str, subject: str, through_position: int, timeout_s: float
) -> int:
    """Purge every message on ``subject`` at or below ``through_position``; how many went.

    Idempotent (a purge re-sent after a crash or a lost reply removes nothing more)."""
    request = json.dumps({"filter": subject, "seq": through_position + 1}).encode()
    try:
        reply = await nc.request(f"$JS.API.STREAM.PURGE.{stream}", request, timeout=timeout_s)
    except (TimeoutError, nats.errors.Error) as exc:
        raise StoreError(f"purging {subject} through position {through_position}: {exc!r} "
                         "(the anchor is written: cut again to finish)") from exc
    try:
        data: dict[str, Any] = json.loads(reply.data)
    except ValueError:
        raise StoreError(f"JetStream sent an unreadable purge reply: {reply.data[:200]!r}"
                         ) from None
    error = data.get("error")
    if error:
        if int(error.get("err_code") or 0) == _ERR_PURGE_NOT_PERMITTED:
            raise purge_denied(stream)
        raise StoreError(f"purging {subject} through position {through_position}: "
                         f"{error.get('description') or error} (the anchor is written: cut "
                         "again to finish)")
    return int(data.get("purged") or 0)


async def cut_stream(
    *,
    kv: KeyValue,
    nc: NatsClient,
    book: AnchorBook,
    stream: str,
    key: str,
    js_stream: str,
    subject: str,
    purge_allowed: bool,
    through_version: int,
    cut_at_ns: int,
    timeout_s: float,
    read_version: Callable[[int], Awaitable[StoredEvent | None]],
    read_last: Callable[[], Awaitable[StoredEvent | None]],
) -> RetentionAnchor:
    """The port's ``cut`` for one stream (``subject``: its events' wildcard subject).

    The anchor is decided from the stored anchor (the bucket's leader) and the event at
    ``through_version`` (``read_version``, from the stream's leader), written with
    compare-and-set, learnt by ``book``, and only then is the prefix purged. At or below the
    stored anchor nothing moves, but the purge is sent again (finishing one a crash cut
    short). The caller holds the stream's append lock."""
    if not purge_allowed:
        raise purge_denied(js_stream)
    for _ in range(_MAX_ANCHOR_RACES):
        current, revision = await load_anchor(kv, key)
        if current is not None:
            book.merge(current)
        if current is not None and through_version <= current.version:
            await purge_prefix(nc, js_stream, subject, current.global_position, timeout_s)
            return current
        event = await read_version(through_version)
        if event is None or event.version != through_version:
            last = await read_last()
            head_version = max(last.version if last is not None else 0,
                               current.version if current is not None else 0)
            if through_version > head_version:
                raise ValueError(
                    f"through_version: stream {stream!r} has no version {through_version} "
                    f"(its head is version {head_version})"
                )
            raise ValueError(f"through_version: stream {stream!r} version {through_version} is "
                             "missing from the log (run sidecar eventlog verify)")
        anchor = RetentionAnchor(
            stream=stream,
            version=through_version,
            hash=event.hash,
            global_position=event.global_position,
            recorded_at_ns=event.recorded_at_ns,
            cut_at_ns=cut_at_ns,
        )
        if await save_anchor(kv, key, anchor, revision):
            book.merge(anchor)  # reads hide the prefix from here on, purged or not
            await purge_prefix(nc, js_stream, subject, anchor.global_position, timeout_s)
            return anchor
    raise StoreError(f"cutting stream {stream!r}: gave up after {_MAX_ANCHOR_RACES} attempts, "
                     "other replicas kept moving its anchor")
