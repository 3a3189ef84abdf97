"""The request buffer replays a caller's stream to each attempt, up to buffer_bytes."""

from __future__ import annotations

import asyncio

import grpc

from sidecar.proxy._request_buffer import RequestBuffer


class FakeCaller:
    """The caller's side: ``read`` hands out the messages, then EOF."""

    def __init__(self, messages: list[bytes]) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        for message in messages:
            self._queue.put_nowait(message)
        self._queue.put_nowait(grpc.aio.EOF)

    async def read(self) -> object:
        return await self._queue.get()


class FakeUpstreamCall:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.half_closed = False

    async def write(self, message: bytes) -> None:
        self.written.append(message)

    async def done_writing(self) -> None:
        self.half_closed = True

    def cancel(self) -> None:
        pass


async def test_every_attempt_gets_the_whole_stream_from_the_start() -> None:
    buffer = RequestBuffer(FakeCaller([b"a", b"bb", b"ccc"]), 64)
    buffer.start()
    first, second = FakeUpstreamCall(), FakeUpstreamCall()
    await buffer.replay(first)
    await buffer.replay(second)
    buffer.close()
    assert first.written == second.written == [b"a", b"bb", b"ccc"]
    assert first.half_closed and second.half_closed
    assert not buffer.overflowed


async def test_a_stream_over_the_limit_is_passed_through_but_not_kept() -> None:
    buffer = RequestBuffer(FakeCaller([b"x" * 40, b"y" * 40, b"z"]), 64)
    buffer.start()
    call = FakeUpstreamCall()
    await buffer.replay(call)
    buffer.close()
    assert call.written == [b"x" * 40, b"y" * 40, b"z"]
    assert buffer.overflowed
    assert buffer._messages == []  # nothing is kept once a replay is impossible
