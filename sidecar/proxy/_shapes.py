"""Call shapes of upstream methods, learned from the upstream's server reflection.

Why: all four call shapes look the same on the wire, so the proxy can forward any call as a
bidi stream without knowing its shape, and does so by default. But grpc's Python bidi path
costs several extra round trips through the event loop per call compared with its unary path.
When the upstream serves ``grpc.reflection.v1alpha.ServerReflection``, the proxy asks it once
per service which methods are unary, and forwards those with the native, cheaper shape. An
upstream without reflection is still proxied correctly, only via the generic bidi path.

Only descriptors are decoded (``FileDescriptorProto``), never a message of the proxied calls.

Threading: everything runs on the proxy's event loop. :meth:`ShapeBook.kind` never blocks or
awaits: a miss schedules a background lookup (at most one per service at a time, retried after
:data:`SHAPE_RETRY_S`) and answers None, meaning "forward as bidi".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sidecar.protection import CallKind

_log = logging.getLogger("sidecar.proxy")

SHAPE_LOOKUP_TIMEOUT_S: Final = 5.0
"""Deadline of one reflection request to an upstream."""
SHAPE_RETRY_S: Final = 60.0
"""After a failed or empty lookup, wait this long before asking about that service again."""
MAX_SHAPE_SERVICES: Final = 1024
"""Services tracked per upstream (service names come from callers: bounded)."""

_KINDS: Final[dict[tuple[bool, bool], CallKind]] = {
    (False, False): "unary_unary",
    (False, True): "unary_stream",
    (True, False): "stream_unary",
    (True, True): "stream_stream",
}


def service_of(method: str) -> str:
    """``/pkg.Service/Method`` -> ``pkg.Service`` ("" if the path is malformed)."""
    service, sep, _ = method[1:].rpartition("/")
    return service if sep else ""


class ShapeBook:
    """The known call shapes of one upstream's (``name``) methods.

    ``on_learned`` is called (on the loop) after a lookup taught something new, so callers can
    drop handlers they built while the shape was unknown.
    """

    def __init__(self, name: str, channel_of: Callable[[], grpc.aio.Channel | None],
                 on_learned: Callable[[], None],
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._channel_of = channel_of
        """The channel to ask over now (an endpoint's current connection); None while the
        upstream has no endpoints (nothing is asked then)."""
        self._on_learned = on_learned
        self._clock = clock
        self._kinds: dict[str, CallKind] = {}
        self._asked_at: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def kind(self, method: str) -> CallKind | None:
        """The method's shape if known; otherwise None and, at most every SHAPE_RETRY_S,
        a background lookup of its service."""
        found = self._kinds.get(method)
        if found is not None:
            return found
        service = service_of(method)
        if service and not self._closed and self._channel_of() is not None:
            asked = self._asked_at.get(service)
            now = self._clock()
            if (asked is None or now - asked >= SHAPE_RETRY_S) and (
                asked is not None or len(self._asked_at) < MAX_SHAPE_SERVICES
            ):
                self._asked_at[service] = now
                self._spawn(self._learn([service]))
        return None

    def learn_all(self) -> None:
        """Ask the upstream for every service it offers (in the background)."""
        if not self._closed:
            self._spawn(self._learn_all())

    def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _learn_all(self) -> None:
        try:
            responses = await self._ask([reflection_pb2.ServerReflectionRequest(list_services="")])
        except (TimeoutError, grpc.RpcError) as exc:
            _log.info("upstream %s offers no server reflection; its calls are forwarded as "
                      "generic streams", self.name,
                      extra={"event": "reflection", "upstream": self.name,
                             "detail": str(exc)[:200]})
            return
        services = [
            service.name
            for response in responses
            for service in response.list_services_response.service
            if not service.name.startswith("grpc.")
        ]
        now = self._clock()
        for name in services[:MAX_SHAPE_SERVICES]:
            self._asked_at[name] = now
        await self._learn(services[:MAX_SHAPE_SERVICES])

    async def _learn(self, services: list[str]) -> None:
        if not services:
            return
        requests = [reflection_pb2.ServerReflectionRequest(file_containing_symbol=name)
                    for name in services]
        try:
            responses = await self._ask(requests)
        except (TimeoutError, grpc.RpcError):
            return
        wanted = set(services)
        learned = 0
        for response in responses:
            for raw in response.file_descriptor_response.file_descriptor_proto:
                learned += self._read_file(descriptor_pb2.FileDescriptorProto.FromString(raw),
                                           wanted)
        if learned:
            _log.info("learned the call shapes of %d methods of upstream %s", learned, self.name,
                      extra={"event": "reflection", "upstream": self.name})
            self._on_learned()

    def _read_file(self, file: descriptor_pb2.FileDescriptorProto, wanted: set[str]) -> int:
        learned = 0
        prefix = f"{file.package}." if file.package else ""
        for service in file.service:
            full_name = prefix + service.name
            if full_name not in wanted:
                continue
            for method in service.method:
                path = f"/{full_name}/{method.name}"
                kind = _KINDS[(method.client_streaming, method.server_streaming)]
                if self._kinds.get(path) != kind:
                    self._kinds[path] = kind
                    learned += 1
        return learned

    async def _ask(self, requests: list[reflection_pb2.ServerReflectionRequest]
                   ) -> list[reflection_pb2.ServerReflectionResponse]:
        channel = self._channel_of()
        if channel is None:
            raise TimeoutError("the upstream has no endpoints to ask")
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(iter(requests), timeout=SHAPE_LOOKUP_TIMEOUT_S)
        return [response async for response in call]
