"""Continuous traffic through the sidecar, and reads of its admin API, for the endpoint tests.

Each upstream process is a :class:`Replica`: it tags every answer (OK or not) with its name in
the ``x-served-by`` initial metadata, so a caller knows which endpoint served each call and the
tests can judge shares *in time* (the calls started within a time span), not by call counts.

:class:`Traffic` runs several concurrent grpc.aio loops (each: call, short pause, call, ...)
until it is stopped, recording every call's start, end, status and server. With 8 loops and a
20 ms pause that is a few hundred calls per second on a quiet machine.

Example::

    async with Traffic(channel, METHOD, loops=8) as traffic:
        start = time.monotonic()
        await asyncio.sleep(1.0)
        shares = served_shares(traffic.between(start, time.monotonic()))
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc

from sidecar.v1 import admin_pb2, admin_pb2_grpc
from tests.support.procs import SIDECAR_BIN
from tests.support.upstream import UpstreamProcess

SERVICE = "sidecar.test.Echo"
METHOD = f"/{SERVICE}/Unary"
"""The traffic's method (described by the upstream's reflection: a native unary handler)."""
SERVED_BY = "x-served-by"
OK = grpc.StatusCode.OK
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
ACTIVE = admin_pb2.ENDPOINT_STATE_ACTIVE
EJECTED = admin_pb2.ENDPOINT_STATE_EJECTED

T = TypeVar("T")


class Replica:
    """One upstream process seen as an endpoint named ``name``; every answer carries the name."""

    def __init__(self, process: UpstreamProcess, name: str) -> None:
        self.process = process
        self.name = name
        self.address = process.address
        self.host = process.host

    def set(self, scope: str = SERVICE, **faults: Any) -> None:
        """Faults of ``scope`` (none: healthy), always with the ``x-served-by`` tag."""
        self.process.configure(scope, initial_metadata={SERVED_BY: self.name}, **faults)

    def reset(self) -> None:
        """No faults and no stats; every service tagged."""
        self.process.reset()
        self.set("*")


@dataclass(frozen=True, slots=True)
class Call:
    started: float  # time.monotonic()
    ended: float
    code: grpc.StatusCode
    details: str
    served_by: str | None  # None: no upstream answered (the sidecar did)
    breaker_open: bool = False  # the sidecar's breaker refused it (x-sidecar-breaker: open)

    @property
    def duration_s(self) -> float:
        return self.ended - self.started


async def call_once(channel: grpc.aio.Channel, method: str = METHOD, payload: bytes = b"ping",
                    timeout_s: float = 5.0) -> Call:
    started = time.monotonic()
    call = channel.unary_unary(method)(payload, timeout=timeout_s)
    code, details, trailing = OK, "", None
    try:
        await call
    except grpc.aio.AioRpcError as error:
        code, details, trailing = error.code(), error.details() or "", error.trailing_metadata()
    ended = time.monotonic()
    served_by = dict(await call.initial_metadata() or ()).get(SERVED_BY)
    breaker_open = dict(trailing or ()).get("x-sidecar-breaker") == "open"
    return Call(started, ended, code, details, None if served_by is None else str(served_by),
                breaker_open)


class Traffic:
    """``loops`` concurrent callers of ``method`` on ``channel`` until the ``async with`` ends
    (or :meth:`stop`); every call is kept in :attr:`calls`."""

    def __init__(self, channel: grpc.aio.Channel, method: str = METHOD, *, loops: int = 8,
                 pause_s: float = 0.02, timeout_s: float = 5.0) -> None:
        self._channel = channel
        self._method = method
        self._loops = loops
        self._pause_s = pause_s
        self._timeout_s = timeout_s
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.calls: list[Call] = []

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            self.calls.append(await call_once(self._channel, self._method,
                                              timeout_s=self._timeout_s))
            if self._pause_s:
                await asyncio.sleep(self._pause_s)

    async def __aenter__(self) -> Traffic:
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(self._loops)]
        return self

    async def stop(self) -> None:
        """Let every loop finish its call in flight (bounded by the call timeout)."""
        self._stopping.set()
        if self._tasks:
            done, pending = await asyncio.wait(self._tasks, timeout=self._timeout_s + 5)
            for task in pending:
                task.cancel()
            for task in done:
                task.result()  # a loop's own bug fails the test
            self._tasks = []

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    def between(self, start: float, end: float | None = None) -> list[Call]:
        """Calls that started within [start, end) (end None: up to now)."""
        stop = time.monotonic() if end is None else end
        return [c for c in self.calls if start <= c.started < stop]

    async def run_for(self, seconds: float) -> list[Call]:
        """Keep going for ``seconds`` more; the calls that started in that span."""
        start = time.monotonic()
        await asyncio.sleep(seconds)
        return self.between(start, time.monotonic())


def served_shares(calls: Sequence[Call]) -> dict[str, float]:
    """Fraction of ``calls`` each endpoint served (the calls no upstream answered excluded)."""
    counts = Counter(c.served_by for c in calls if c.served_by is not None)
    total = sum(counts.values())
    return {name: n / total for name, n in counts.items()} if total else {}


def success_rate(calls: Sequence[Call]) -> float:
    return sum(c.code == OK for c in calls) / len(calls) if calls else 0.0


def summary(calls: Sequence[Call]) -> str:
    """For assertion messages: how many calls, per status and per server."""
    codes = Counter(c.code.name for c in calls)
    servers = Counter(c.served_by for c in calls)
    return f"{len(calls)} calls, codes {dict(codes)}, served by {dict(servers)}"


async def eventually(check: Callable[[], Awaitable[T | None]], timeout_s: float = 10.0,
                     interval_s: float = 0.05, what: str = "condition") -> T:
    """The first non-None, non-False result of ``check()`` within ``timeout_s`` (wall clock)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s}s")
        await asyncio.sleep(interval_s)


class Admin:
    """The sidecar's admin API over grpc.aio (no blocking of the traffic's loop)."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self._stub = admin_pb2_grpc.SidecarAdminStub(self._channel)  # type: ignore[no-untyped-call]

    async def upstream_endpoints(self, upstream: str) -> admin_pb2.UpstreamEndpoints:
        response = await self._stub.ListEndpoints(
            admin_pb2.ListEndpointsRequest(upstream=upstream), timeout=5)
        (found,) = response.upstreams
        assert isinstance(found, admin_pb2.UpstreamEndpoints)
        return found

    async def endpoints(self, upstream: str) -> dict[str, admin_pb2.EndpointInfo]:
        """The upstream's endpoints by address."""
        found = await self.upstream_endpoints(upstream)
        return {info.address: info for info in found.endpoints}

    async def breaker(self, name: str) -> admin_pb2.BreakerInfo:
        info = await self._stub.GetBreaker(admin_pb2.GetBreakerRequest(name=name), timeout=5)
        assert isinstance(info, admin_pb2.BreakerInfo)
        return info

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Admin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@dataclass(frozen=True, slots=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


async def sidecar_cli(*args: str, timeout_s: float = 20.0) -> CliResult:
    """Run ``sidecar ARGS...`` as a process without blocking the event loop."""
    process = await asyncio.create_subprocess_exec(
        SIDECAR_BIN, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return CliResult(process.returncode, out.decode(), err.decode())


def write_endpoints_file(path: Path, lines: Iterable[str]) -> None:
    """Replace ``path`` atomically (rename, as Kubernetes updates a mounted ConfigMap)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(f"{line}\n" for line in lines))
    os.replace(temporary, path)
