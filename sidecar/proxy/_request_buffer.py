"""The caller's request stream, kept so a retry can send it again (gRFC A6 "buffering").

Why a buffer: a client-streaming or bidi call may be retried only if every request message it
sent so far can be replayed to the next endpoint. The buffer holds them up to ``limit_bytes``
(``retry.buffer_bytes``); past that the call is no longer retryable (:attr:`overflowed`), and
from then on the buffer only passes messages through, keeping none it has delivered.

One reader task copies the caller's stream into the buffer for the whole call: reads from the
caller are never cancelled half way (a cancelled ``context.read()`` may lose the message it was
receiving), only the per-attempt writers are. Before the overflow the reader runs ahead of the
upstream by at most ``limit_bytes``; after it, by one message (back-pressure as without retries).

Threading: the proxy's event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

import grpc

_log = logging.getLogger("sidecar.proxy")
_EOF: Final = grpc.aio.EOF
_GONE: Final = (grpc.aio.AioRpcError, grpc.aio.BaseError, asyncio.InvalidStateError)


class RequestBuffer:
    """The request messages of one call: :meth:`start` reads the caller's stream,
    :meth:`replay` sends everything (kept and yet to come) to one attempt's upstream call.

    Example::

        buffer = RequestBuffer(context, 256 * 1024)
        buffer.start()
        pump = asyncio.create_task(buffer.replay(call))   # one attempt
        ...
        buffer.close()                                    # the call is over
    """

    __slots__ = ("_base", "_broken", "_bytes", "_context", "_cursor", "_ended", "_limit",
                 "_messages", "_reader", "_wake", "overflowed")

    def __init__(self, context: Any, limit_bytes: int) -> None:
        self._context = context
        self._limit = limit_bytes
        self._messages: list[bytes] = []
        self._base = 0  # absolute index of _messages[0] (messages before it were dropped)
        self._bytes = 0
        self._cursor = 0  # absolute index of the next message the current attempt sends
        self._ended = False  # the caller half-closed: every message is known
        self._broken = False  # the caller's stream failed (it left)
        self._wake = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self.overflowed = False
        """More than ``limit_bytes`` were sent: the call can no longer be replayed."""

    def start(self) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read())

    def close(self) -> None:
        """The call is over: stop reading the caller's stream."""
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()

    def _notify(self) -> None:
        self._wake.set()
        self._wake = asyncio.Event()

    async def _read(self) -> None:
        try:
            while True:
                while self.overflowed and self._cursor < self._base + len(self._messages):
                    await self._wake.wait()  # pass-through: wait until the attempt caught up
                message = await self._context.read()
                if message is _EOF:
                    self._ended = True
                    return
                self._messages.append(message)
                self._bytes += len(message)
                if self._bytes > self._limit:
                    self.overflowed = True
                self._notify()
        except _GONE:
            self._broken = True
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("request reader failed")
            self._broken = True
        finally:
            self._notify()

    async def replay(self, call: Any) -> None:
        """Send every request message to ``call`` from the first one, then half-close it.
        Ends quietly when either side has gone (the statuses say why)."""
        index = self._base if not self.overflowed else self._cursor
        self._cursor = index
        try:
            while True:
                while index >= self._base + len(self._messages):
                    if self._ended:
                        await call.done_writing()
                        return
                    if self._broken:
                        return
                    await self._wake.wait()
                message = self._messages[index - self._base]
                index += 1
                self._cursor = index
                if self.overflowed:  # nothing will be replayed again: drop what was sent
                    del self._messages[: index - self._base]
                    self._base = index
                    self._notify()
                await call.write(message)
        except _GONE:
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("request pump failed; cancelling the upstream call")
            with contextlib.suppress(Exception):
                call.cancel()


async def pump_requests(context: Any, call: Any) -> None:
    """Copy the caller's request stream to the upstream call, then half-close it.

    Stops quietly when either call has ended: the upstream's (its status tells the caller
    why) or the caller's (the handler answered, e.g. aborted with the upstream's error).
    """
    try:
        while True:
            message = await context.read()
            if message is _EOF:
                await call.done_writing()
                return
            await call.write(message)
    except (grpc.aio.AioRpcError, grpc.aio.BaseError, asyncio.InvalidStateError):
        return
    except asyncio.CancelledError:
        raise
    except Exception:
        _log.exception("request pump failed; cancelling the upstream call")
        call.cancel()
