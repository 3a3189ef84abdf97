"""The demo's sample upstreams: real gRPC servers whose behaviour follows a schedule of phases
(:mod:`sidecar.demo._phases`).

Run by ``sidecar demo``, each in its own process::

    python -m sidecar.demo.upstream --listen 127.0.0.1:50051 \
        --phases healthy=8,brownout=8,outage=12,recovery=20
    python -m sidecar.demo.upstream --serve orders --listen 127.0.0.1:50062 \
        --phases healthy=8,sick=11,healed=41

``--serve shop`` (the default): ``payments`` goes through the phases (healthy, brownout,
outage, recovery, repeating) while ``inventory`` stays healthy and ``catalog`` has a fixed
capacity (``CATALOG_CAPACITY``: a few calls at once, ~25 ms each; the rest wait for a slot, so
its latency climbs with the load the demo offers it). ``--serve orders``: one replica
of ``orders``, following the replica phases (healthy, sick, healed); the demo starts three,
one of which sickens (the others get a schedule that stays healthy).

The schedule's clock starts at ``--started-at`` (UNIX seconds) or, without it, at the first
SIGUSR1 (the demo sends it when its load starts); until then the first phase holds.

Methods (any request bytes; the answer echoes them): ``/demo.shop.Payments/Charge`` and
``/demo.shop.Inventory/Reserve``, ``/demo.shop.Catalog/Browse`` (shop),
``/demo.shop.Orders/Place`` (orders). No protobuf
schema: the sidecar forwards raw bytes. Also serves ``grpc.health.v1``. Exits on
SIGTERM/SIGINT, and by itself when the process that started it goes away (so a killed demo
leaves nothing behind).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import signal
import sys
import time
from collections.abc import Mapping
from typing import Final

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sidecar.cli_types import finite_float
from sidecar.demo._phases import (
    BEHAVIOURS,
    CATALOG_CAPACITY,
    REPLICA_BEHAVIOURS,
    STEADY,
    Behaviour,
    Capacity,
    parse_schedule,
    phase_at,
)

PAYMENTS_SERVICE: Final = "demo.shop.Payments"
INVENTORY_SERVICE: Final = "demo.shop.Inventory"
PAYMENTS_METHOD: Final = f"/{PAYMENTS_SERVICE}/Charge"
INVENTORY_METHOD: Final = f"/{INVENTORY_SERVICE}/Reserve"
CATALOG_SERVICE: Final = "demo.shop.Catalog"
CATALOG_METHOD: Final = f"/{CATALOG_SERVICE}/Browse"
ORDERS_SERVICE: Final = "demo.shop.Orders"
ORDERS_METHOD: Final = f"/{ORDERS_SERVICE}/Place"
ROLES: Final[dict[str, tuple[str, tuple[str, ...], Mapping[str, Behaviour]]]] = {
    "shop": (PAYMENTS_METHOD, (PAYMENTS_METHOD, INVENTORY_METHOD, CATALOG_METHOD), BEHAVIOURS),
    "orders": (ORDERS_METHOD, (ORDERS_METHOD,), REPLICA_BEHAVIOURS),
}
"""``--serve`` role: (the method that follows the schedule, every method served, phase names)."""
PARENT_CHECK_INTERVAL_S: Final = 0.5


class _Answers:
    """Decides each answer; failures are spread evenly (0.35 fails 35 of every 100 calls)."""

    def __init__(self, schedule: tuple[tuple[str, float], ...], started_at: float | None,
                 role: str = "shop") -> None:
        self._schedule = schedule
        self.started_at = started_at
        self.scheduled_method, self.methods, self._behaviours = ROLES[role]
        self._calls: dict[str, int] = {}
        self._rng = random.Random(7)

    def behaviour(self, method: str) -> Behaviour:
        if method == self.scheduled_method:
            elapsed_s = 0.0 if self.started_at is None else time.time() - self.started_at
            return phase_at(self._schedule, elapsed_s, self._behaviours).behaviour
        return STEADY

    def decide(self, method: str) -> tuple[float, bool, Behaviour]:
        behaviour = self.behaviour(method)
        n = self._calls[method] = self._calls.get(method, 0) + 1
        ratio = behaviour.failure_ratio
        fail = math.floor(n * ratio) > math.floor((n - 1) * ratio)
        low, high = behaviour.latency_ms
        return self._rng.uniform(low, high) / 1000.0, fail, behaviour


class _Capacity:
    """A server with ``capacity.concurrency`` slots: a call waits (in the server, as in a
    saturated thread pool) for a free slot, then takes its service time."""

    def __init__(self, capacity: Capacity, rng: random.Random) -> None:
        self._capacity = capacity
        self._slots = asyncio.Semaphore(capacity.concurrency)
        self._rng = rng

    async def serve(self) -> None:
        async with self._slots:
            await asyncio.sleep(self._rng.uniform(*self._capacity.service_ms) / 1000.0)


class _Handler(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self, answers: _Answers) -> None:
        self._answers = answers
        self._catalog = _Capacity(CATALOG_CAPACITY, random.Random(11))

    def service(self, handler_call_details: grpc.HandlerCallDetails
                ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method not in self._answers.methods:
            return None
        answers = self._answers
        if method == CATALOG_METHOD:
            catalog = self._catalog

            async def browse(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                await catalog.serve()
                return request

            return grpc.unary_unary_rpc_method_handler(browse)

        async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            delay_s, fail, behaviour = answers.decide(method)
            await asyncio.sleep(delay_s)
            if fail:
                await context.abort(grpc.StatusCode[behaviour.failure_code],
                                    f"{method}: simulated failure")
            return request

        return grpc.unary_unary_rpc_method_handler(unary)


async def serve(listen: str, schedule: tuple[tuple[str, float], ...],
                started_at: float | None, role: str = "shop") -> None:
    answers = _Answers(schedule, started_at, role)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_Handler(answers),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(listen) == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: setattr(answers, "started_at", time.time()))
    parent = os.getppid()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), PARENT_CHECK_INTERVAL_S)
        except TimeoutError:
            if os.getppid() != parent:  # the demo is gone: do not outlive it
                break
    await server.stop(grace=0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--serve", choices=tuple(ROLES), default="shop",
                        help="shop: payments and inventory; orders: one orders replica "
                             "(default: %(default)s)")
    parser.add_argument("--phases", required=True, help="NAME=SECONDS,... (repeating)")
    parser.add_argument("--started-at", type=finite_float, default=None,
                        help="UNIX time the schedule starts at (default: at SIGUSR1)")
    args = parser.parse_args(argv)
    try:
        schedule = parse_schedule(args.phases, ROLES[args.serve][2])
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(args.listen, schedule, args.started_at, args.serve))
    except OSError as exc:
        print(f"sample upstream: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
