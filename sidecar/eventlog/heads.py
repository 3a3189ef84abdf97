"""Stream heads saved earlier, and the check of a log against them (``verify --against``).

A log restored from an older backup is whole by itself: its chains verify. What it cannot show is
what it lost. ``sidecar eventlog heads --store URL > FILE`` saves every stream's head (version and
hash, one JSON object per line); ``sidecar eventlog verify --store URL --against FILE`` later
checks, beside the chains, that no stream's head is now behind the saved one and that the event
at each saved version still has the saved hash. A stream missing from the log is behind (its head
is version 0).

Format of FILE: JSON lines ``{"stream": "checkout/pod-1", "version": 12, "hash": "<hex>"}``
(a JSON array of such objects is read too).

Uses only the store port (``read_stream``), so it works for every adapter. Finding a head is a
galloping search from version 1, then a binary search: about 2*log2(version) reads of one event.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from sidecar.eventlog.port import EventStore, RetentionAnchor

__all__ = ["HeadBreak", "SavedHead", "check_against", "format_heads", "parse_heads",
           "read_heads", "stream_head"]


@dataclass(frozen=True, slots=True)
class SavedHead:
    """A stream's last version and its hash."""

    stream: str
    version: int
    hash: bytes

    def to_json(self) -> str:
        return json.dumps({"stream": self.stream, "version": self.version,
                           "hash": self.hash.hex()}, sort_keys=True)


@dataclass(frozen=True, slots=True)
class HeadBreak:
    """A stream whose log no longer holds the saved head."""

    saved: SavedHead
    found_version: int
    problem: str

    def __str__(self) -> str:
        return (f"stream {self.saved.stream!r}: saved head version {self.saved.version}, "
                f"log head version {self.found_version}: {self.problem}")


async def _hash_at(store: EventStore, stream: str, version: int) -> bytes | None:
    page = await store.read_stream(stream, version, 1)
    if page and page[0].version == version:
        return page[0].hash
    return None


async def stream_head(
    store: EventStore, stream: str, anchor: RetentionAnchor | None = None
) -> SavedHead:
    """The last event of ``stream`` (version 0 and an empty hash when it has none).

    Pass the stream's retention ``anchor`` when it has one: the search starts there, and a
    stream whose events were all deleted has the anchor as its head."""
    low, low_hash, step = 0, b"", 1
    if anchor is not None:
        low, low_hash = anchor.version, anchor.hash
    while True:
        found = await _hash_at(store, stream, low + step)
        if found is None:
            high = low + step
            break
        low, low_hash, step = low + step, found, step * 2
    while high - low > 1:
        middle = (low + high) // 2
        found = await _hash_at(store, stream, middle)
        if found is None:
            high = middle
        else:
            low, low_hash = middle, found
    if low == 0:  # a stream cut by retention starts later: its first event is the lower bound
        page = await store.read_stream(stream, 1, 1)
        if page:
            return await _head_from(store, stream, page[0].version, page[0].hash)
    return SavedHead(stream, low, low_hash)


async def _head_from(store: EventStore, stream: str, version: int, hash_: bytes) -> SavedHead:
    """Walk forward in pages from a known event (streams that do not start at version 1)."""
    while True:
        page = await store.read_stream(stream, version + 1)
        if not page:
            return SavedHead(stream, version, hash_)
        version, hash_ = page[-1].version, page[-1].hash


async def read_heads(store: EventStore) -> list[SavedHead]:
    """Every stream's head, by stream name (a stream cut whole by retention: its anchor)."""
    heads = []
    for stream in await store.streams():
        version, hash_ = await store.stream_head(stream)
        heads.append(SavedHead(stream, version, hash_))
    return heads


def format_heads(heads: Iterable[SavedHead]) -> str:
    """JSON lines, one head each."""
    return "".join(head.to_json() + "\n" for head in heads)


def parse_heads(text: str) -> list[SavedHead]:
    """Heads from JSON lines or a JSON array; raises ``ValueError`` naming the bad entry."""
    stripped = text.strip()
    if stripped.startswith("["):
        items = json.loads(stripped)
    else:
        items = []
        for number, line in enumerate(stripped.splitlines(), start=1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"line {number}: not JSON ({exc.msg})") from None
    heads = []
    for number, item in enumerate(items, start=1):
        try:
            heads.append(SavedHead(str(item["stream"]), int(item["version"]),
                                   bytes.fromhex(str(item["hash"]))))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"entry {number}: needs stream, version and hex hash ({exc})") \
                from None
    return heads


async def check_against(store: EventStore, saved: Iterable[SavedHead]) -> list[HeadBreak]:
    """Every saved head the log no longer holds: behind it, or another hash at its version."""
    breaks = []
    anchors = await store.anchors()
    for head in saved:
        if head.version == 0:
            continue
        found = await _hash_at(store, head.stream, head.version)
        anchor = anchors.get(head.stream)
        if found is None and anchor is not None and head.version <= anchor.version:
            if head.version == anchor.version and head.hash != anchor.hash:
                breaks.append(HeadBreak(head, anchor.version, "the retention anchor at the saved "
                                        "version has another hash"))
            continue  # deleted by retention since it was saved; the chain check covers the rest
        if found is None:
            now = await stream_head(store, head.stream, anchor)
            if now.version < head.version:
                breaks.append(HeadBreak(head, now.version, "the log is behind the saved head "
                                        "(restored from an older copy?)"))
            # else: the saved version was cut by retention since; the chain check covers the rest
        elif found != head.hash:
            now = await stream_head(store, head.stream, anchor)
            breaks.append(HeadBreak(head, now.version,
                                    f"another event at version {head.version} (hash "
                                    f"{found.hex()[:16]}..., saved {head.hash.hex()[:16]}...)"))
    return breaks
