"""The adapter's state and its connection: connect lazily, provision, close; head notices.

``JetStreamConnection`` is the base of the adapter's parts (``lookups`` → ``reads``,
``commit`` → ``append``, ``checkpoints``, ``following``; ``store.NatsEventStore`` joins them):
it owns every piece of state they share, so each part reads as a few methods over it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import Final

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from sidecar.eventlog.nats.plans import Head, KeyedLocks, PendingAppend
from sidecar.eventlog.nats.provisioning import ensure_bucket, ensure_stream
from sidecar.eventlog.nats.retention import AnchorBook, AnchorWatch
from sidecar.eventlog.nats.settings import NatsSettings
from sidecar.eventlog.nats.subjects import Subjects
from sidecar.eventlog.nats_auth import quiet_ssl_eof_warning
from sidecar.eventlog.port import EventStore, StoredEvent, StoreError

_log = logging.getLogger(__name__)

_RECONNECT_WAIT_S: Final = 0.25


class JetStreamConnection(EventStore):
    """The state every part of the adapter shares, the connection and the head notices."""

    def __init__(self, settings: NatsSettings) -> None:
        self._settings = settings
        self._subjects = Subjects(settings.stream)
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._kv: KeyValue | None = None
        self._connect_lock = asyncio.Lock()
        self._closed = False
        self._heads: dict[str, Head] = {}
        self._stream_locks = KeyedLocks()
        self._last_recorded_ns = 0
        self._recent: dict[int, StoredEvent] = {}
        self._recent_order: collections.deque[int] = collections.deque()
        self._pending: collections.deque[PendingAppend] = collections.deque()
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
            info = await ensure_stream(js, s, self._subjects, refused)
            self._replicated = (info.config.num_replicas or 1) > 1
            self._purge_allowed = not info.config.deny_purge
            self._note_head(info.state.last_seq)
            self._kv = await ensure_bucket(js, s, refused)
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

    # --- head notices (subscribed at connect) -------------------------------------------

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


async def _log_nats_error(exc: Exception) -> None:
    _log.debug("nats client: %r", exc)


async def _log_reconnected() -> None:
    _log.info("event store: reconnected to NATS")
