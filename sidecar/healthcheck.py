"""``sidecar health``: ask a server's ``grpc.health.v1`` whether it is serving.

The container image's ``HEALTHCHECK`` runs this (Kubernetes uses its own ``grpc`` probes
instead). It works against every server of the project: the sidecar's admin address and the
event log's listen address both serve ``grpc.health.v1``.

Exit status: 0 when the server answers SERVING, 1 otherwise (not serving, unreachable, or no
answer within the timeout), 2 for bad usage. Blocks for at most ``--timeout-s``.

Example::

    sidecar health --addr 127.0.0.1:15000
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Final

HEALTH_ADDR_ENV: Final = "SIDECAR_HEALTH_ADDR"
"""Environment variable with the default ``--addr`` (the image sets it; the event log's
container overrides it with its own listen address)."""

DEFAULT_HEALTH_ADDR: Final = "127.0.0.1:15000"
"""The sidecar's default ``admin_listen``."""

DEFAULT_HEALTH_TIMEOUT_S: Final = 2.0


def check_health(address: str, service: str = "", timeout_s: float = DEFAULT_HEALTH_TIMEOUT_S
                 ) -> tuple[bool, str]:
    """Return ``(serving, what was seen)`` for ``service`` ("" = the whole server)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            code = exc.code()
            return False, f"{code.name if code else 'UNKNOWN'}: {exc.details() or ''}".strip()
    status_name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status_name


def _run(args: argparse.Namespace) -> int:
    if args.timeout_s <= 0:
        print("sidecar health: --timeout-s must be > 0", file=sys.stderr)
        return 2
    serving, seen = check_health(args.addr, args.service, args.timeout_s)
    target = f"{args.addr} service={args.service!r}" if args.service else args.addr
    print(f"{target}: {seen}", file=sys.stdout if serving else sys.stderr)
    return 0 if serving else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sidecar health``."""
    parser = subparsers.add_parser(
        "health", help="check a server's grpc.health.v1 (exit 0 when SERVING)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--addr", default=os.environ.get(HEALTH_ADDR_ENV, DEFAULT_HEALTH_ADDR),
        help=f"HOST:PORT (default: ${HEALTH_ADDR_ENV} or {DEFAULT_HEALTH_ADDR})",
    )
    parser.add_argument("--service", default="", help='health service name (default: "")')
    parser.add_argument("--timeout-s", type=float, default=DEFAULT_HEALTH_TIMEOUT_S,
                        help=f"give up after this many seconds (default: "
                             f"{DEFAULT_HEALTH_TIMEOUT_S})")
    parser.set_defaults(func=_run)
