"""Creating the JetStream stream and the checkpoint bucket, or checking the ones that exist.

Run once per connection (``JetStreamConnection._connect``). A stream that exists with settings
that break the adapter's invariants (one message per subject, atomic batches, no deletes) is
refused with a ``StoreError`` listing them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)
from nats.js.kv import KeyValue

from sidecar.eventlog.nats.errors import RETRY_BACKOFF_S, SETUP_RETRYABLE
from sidecar.eventlog.nats.settings import NatsSettings
from sidecar.eventlog.nats.subjects import Subjects
from sidecar.eventlog.port import StoreError

_log = logging.getLogger(__name__)

_T = TypeVar("_T")


async def ensure_stream(
    js: JetStreamContext, s: NatsSettings, subjects: Subjects, refusals: list[str]
) -> StreamInfo:
    """Create the log's stream, or check that the one there keeps the adapter's invariants
    (``StoreError`` listing what it breaks); its info, for the caller to learn from."""
    config = StreamConfig(
        name=s.stream,
        description="Evergreen Sidecar breaker event log (one subject per stream version)",
        subjects=[subjects.events],
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
            for pause in RETRY_BACKOFF_S:
                try:
                    return await js.stream_info(s.stream)
                except nats.js.errors.NotFoundError:
                    await asyncio.sleep(pause)
            raise StoreError(
                f"JetStream refused stream {s.stream!r}: {refused.description}"
            ) from None

    info = await setup_step(s, refusals, f"creating JetStream stream {s.stream!r}", create)
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
            ("subjects must be exactly " + subjects.events,
             list(cfg.subjects or []) == [subjects.events]),
        )
        if not ok
    ]
    if problems:
        raise StoreError(
            f"JetStream stream {s.stream!r} exists with unsafe settings: {'; '.join(problems)}"
        )
    if s.retention and cfg.deny_purge:
        _log.warning("JetStream stream %r exists with deny_purge (created without "
                     "retention=1), which JetStream cannot lift: retention cannot cut it",
                     s.stream)
    return info


async def ensure_bucket(js: JetStreamContext, s: NatsSettings, refusals: list[str]) -> KeyValue:
    """The checkpoint bucket (created if missing; it also holds the retention anchors)."""

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

    return await setup_step(s, refusals, f"creating KV bucket {s.checkpoint_bucket!r}", create)


async def setup_step(
    s: NatsSettings, refusals: list[str], what: str, step: Callable[[], Awaitable[_T]]
) -> _T:
    """Run ``step``, retrying server-side failures (JetStream starting up, an election)
    for up to ``append_retry_s``; other failures are reported at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + s.append_retry_s
    for attempt in itertools.count(1):
        try:
            return await step()
        except SETUP_RETRYABLE as exc:
            if refusals:  # e.g. a permissions violation: no retry will fix it
                raise StoreError(refusals[-1]) from None
            pause = RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S)) - 1]
            if loop.time() + pause > deadline:
                raise StoreError(f"{what}: {exc!r}") from exc
            _log.info("%s: %r (retrying)", what, exc)
            await asyncio.sleep(pause)
        except (TimeoutError, nats.errors.Error) as exc:
            raise StoreError(f"{what}: {exc!r}") from exc
    raise AssertionError("unreachable")
