"""A fault-injecting TCP proxy for chaos tests: put it between a client and a server on loopback
and break the network between them on purpose, at run time.

Modes (switch any time, from any thread; each switch applies to new *and* existing connections):

- ``pass_through()``: bytes flow both ways untouched.
- ``drop()``: a black hole, like a partition behind a stateful firewall. New connections are
  accepted but never connected to the target; everything read from either side is discarded.
  Existing connections are black-holed too, and **stay** black-holed after the network heals:
  only their endpoints can notice (keepalive, deadlines) and open new ones, exactly as after a
  real partition. Nothing is sent back, no FIN, no RST.
- ``delay(ms)``: every chunk is delivered ``ms`` later than it was read, in both directions,
  order kept (a slow link, not a slow reader: reading goes on at full speed).
- ``reset()``: every open connection is aborted with a TCP RST on both sides (``SO_LINGER 0``),
  and each new one is accepted and reset at once.
- ``refuse()``: the listening socket is closed (a connect gets ``ECONNREFUSED``) and open
  connections are reset, as when the server's host reboots. Leaving this mode listens again on
  the same port.

Counters (:meth:`FaultProxy.stats`): connections accepted, black-holed and reset, bytes
forwarded each way, bytes discarded, failed connects to the target.

Threading: the proxy runs its own asyncio event loop in a daemon thread. The public methods are
safe to call from any thread except that loop's own; each switch returns after the loop has
applied it, so a test can rely on it at once. Nothing here blocks the caller for longer than a
switch takes (milliseconds).

Example::

    with FaultProxy(target_port=eventlog_port) as proxy:
        start_sidecar(eventlog_address=proxy.address)
        proxy.drop()            # the sidecar is cut off from the event log
        time.sleep(30)
        proxy.pass_through()    # healed
        assert proxy.stats().connections_black_holed >= 1
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, TypeVar

__all__ = ["FaultProxy", "Mode", "ProxyStats"]

READ_CHUNK_BYTES: Final = 65_536
"""Most bytes read from a socket at a time."""
CONNECT_TIMEOUT_S: Final = 5.0
"""How long a connect to the target may take before the client side is reset."""
SWITCH_TIMEOUT_S: Final = 10.0
"""How long a caller waits for the proxy's loop to apply a switch."""
START_TIMEOUT_S: Final = 10.0
"""How long :meth:`FaultProxy.start` waits for the listener."""

_T = TypeVar("_T")


class Mode(enum.Enum):
    """What the proxy does to traffic (see the module docstring)."""

    PASS = "pass"
    DROP = "drop"
    DELAY = "delay"
    RESET = "reset"
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class ProxyStats:
    """A snapshot of the proxy's counters (since start)."""

    mode: Mode
    delay_ms: float
    connections_accepted: int
    connections_open: int
    connections_black_holed: int
    connections_reset: int
    target_connect_failures: int
    bytes_to_target: int
    bytes_to_client: int
    bytes_dropped: int


def _abort_with_rst(writer: asyncio.StreamWriter | None) -> None:
    """Close the connection with a TCP RST instead of a FIN (``SO_LINGER`` on, timeout 0)."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    """One client connection and (unless black-holed) its connection to the target."""

    def __init__(self, client_writer: asyncio.StreamWriter) -> None:
        self.client_writer = client_writer
        self.target_writer: asyncio.StreamWriter | None = None
        self.black_holed = False
        self.closed = False
        self.eof_to_target = False
        self.eof_to_client = False
        self.tasks: set[asyncio.Task[None]] = set()

    def reset(self) -> None:
        """RST both sides and stop every task of this link."""
        if self.closed:
            return
        self.closed = True
        _abort_with_rst(self.client_writer)
        _abort_with_rst(self.target_writer)
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()


class FaultProxy:
    """A TCP proxy from ``127.0.0.1:<port>`` to ``target_host:target_port`` with fault switches.

    ``listen_port=0`` picks a free port; :attr:`port` / :attr:`address` tell which.
    """

    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1",
                 listen_port: int = 0, listen_host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self.port = listen_port
        self._mode = Mode.PASS
        self._delay_s = 0.0
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._accepted = 0
        self._black_holed = 0
        self._reset = 0
        self._connect_failures = 0
        self._bytes_to_target = 0
        self._bytes_to_client = 0
        self._bytes_dropped = 0

    @property
    def address(self) -> str:
        """``HOST:PORT`` to give the client instead of the target's address."""
        return f"{self.listen_host}:{self.port}"

    # --- lifecycle (caller's thread) ---------------------------------------------------------

    def start(self) -> FaultProxy:
        """Start the loop thread and listen; returns once connections are accepted."""
        if self._thread is not None:
            raise RuntimeError("FaultProxy already started")
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=f"faultproxy-{self.target_port}",
                                        daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT_S):
            raise RuntimeError("fault proxy loop did not start")
        self._call(self._listen())
        return self

    def close(self) -> None:
        """Stop listening, reset every connection and stop the loop thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=SWITCH_TIMEOUT_S)
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- switches (caller's thread) ----------------------------------------------------------

    def pass_through(self) -> None:
        """Forward bytes untouched (connections black-holed earlier stay dead)."""
        self._call(self._switch(Mode.PASS, 0.0))

    def drop(self) -> None:
        """Black-hole every connection, new and existing (see the module docstring)."""
        self._call(self._switch(Mode.DROP, 0.0))

    def delay(self, ms: float) -> None:
        """Deliver every chunk ``ms`` milliseconds after it was read, both ways."""
        if ms < 0:
            raise ValueError(f"delay ms: must be >= 0, got {ms}")
        self._call(self._switch(Mode.DELAY, ms / 1000.0))

    def reset(self) -> None:
        """RST every open connection and every new one."""
        self._call(self._switch(Mode.RESET, 0.0))

    def refuse(self) -> None:
        """Stop listening (connects are refused) and RST every open connection."""
        self._call(self._switch(Mode.REFUSE, 0.0))

    def stats(self) -> ProxyStats:
        """The counters, read on the proxy's loop (a consistent snapshot)."""

        async def snapshot() -> ProxyStats:
            return ProxyStats(
                mode=self._mode,
                delay_ms=self._delay_s * 1000.0,
                connections_accepted=self._accepted,
                connections_open=sum(1 for link in self._links if not link.closed),
                connections_black_holed=self._black_holed,
                connections_reset=self._reset,
                target_connect_failures=self._connect_failures,
                bytes_to_target=self._bytes_to_target,
                bytes_to_client=self._bytes_to_client,
                bytes_dropped=self._bytes_dropped,
            )

        return self._call(snapshot())

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        loop = self._loop
        if loop is None or self._thread is None:
            coro.close()
            raise RuntimeError("FaultProxy is not started")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(SWITCH_TIMEOUT_S)

    # --- the loop's side -------------------------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._on_client, self.listen_host, self.port, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            # wait_closed() also waits for handler tasks in newer Pythons: do not wait for them.
            await asyncio.sleep(0)

    async def _shutdown(self) -> None:
        await self._stop_listening()
        for link in list(self._links):
            link.reset()
        self._links.clear()

    async def _switch(self, mode: Mode, delay_s: float) -> None:
        previous, self._mode, self._delay_s = self._mode, mode, delay_s
        if mode is Mode.DROP:
            for link in self._links:
                if not link.black_holed:
                    link.black_holed = True
                    self._black_holed += 1
        elif mode in (Mode.RESET, Mode.REFUSE):
            for link in list(self._links):
                if not link.closed:
                    self._reset += 1
                link.reset()
            self._links.clear()
        if mode is Mode.REFUSE:
            await self._stop_listening()
        elif previous is Mode.REFUSE or self._server is None:
            await self._listen()

    async def _on_client(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        self._accepted += 1
        link = _Link(writer)
        if self._mode in (Mode.RESET, Mode.REFUSE):
            self._reset += 1
            link.reset()
            return
        self._links.add(link)
        try:
            if self._mode is Mode.DROP:
                link.black_holed = True
                self._black_holed += 1
            else:
                try:
                    target_reader, link.target_writer = await asyncio.wait_for(
                        asyncio.open_connection(self.target_host, self.target_port),
                        CONNECT_TIMEOUT_S)
                except (OSError, TimeoutError):
                    self._connect_failures += 1
                    link.reset()
                    return
                if link.closed:  # reset while connecting
                    _abort_with_rst(link.target_writer)
                    return
                self._spawn(link, self._pump(link, target_reader, to_target=False))
            await self._pump(link, reader, to_target=True)
        finally:
            if link.closed:
                self._links.discard(link)

    def _spawn(self, link: _Link, coro: Awaitable[None]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.get_running_loop().create_task(run())
        link.tasks.add(task)
        task.add_done_callback(link.tasks.discard)

    async def _pump(self, link: _Link, reader: asyncio.StreamReader, *, to_target: bool) -> None:
        """Read one direction until EOF; forward, delay or discard each chunk."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        self._spawn(link, self._deliver(link, queue, to_target=to_target))
        try:
            while not link.closed:
                try:
                    data = await reader.read(READ_CHUNK_BYTES)
                except (ConnectionError, OSError):
                    link.reset()
                    return
                if not data:
                    break
                if link.black_holed:
                    self._bytes_dropped += len(data)
                    continue
                queue.put_nowait((time.monotonic() + self._delay_s, data))
        finally:
            queue.put_nowait(None)

    async def _deliver(self, link: _Link, queue: asyncio.Queue[tuple[float, bytes] | None],
                       *, to_target: bool) -> None:
        """Write chunks in order, each no earlier than its due time; EOF is passed on."""
        while True:
            item = await queue.get()
            if item is None:
                if link.black_holed:
                    return  # a black hole says nothing, not even FIN
                writer = link.target_writer if to_target else link.client_writer
                if writer is not None and not link.closed:
                    with contextlib.suppress(OSError, RuntimeError):
                        if writer.can_write_eof():
                            writer.write_eof()
                self._close_if_done(link, to_target)
                return
            due, data = item
            wait_s = due - time.monotonic()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            if link.black_holed:
                self._bytes_dropped += len(data)
                continue
            writer = link.target_writer if to_target else link.client_writer
            if writer is None or link.closed:
                continue
            try:
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError):
                link.reset()
                return
            if to_target:
                self._bytes_to_target += len(data)
            else:
                self._bytes_to_client += len(data)

    def _close_if_done(self, link: _Link, to_target: bool) -> None:
        """After EOF in both directions, close both sockets normally (FIN)."""
        if to_target:
            link.eof_to_target = True
        else:
            link.eof_to_client = True
        if link.eof_to_target and link.eof_to_client:
            link.closed = True
            for writer in (link.client_writer, link.target_writer):
                if writer is not None:
                    writer.close()
            self._links.discard(link)
