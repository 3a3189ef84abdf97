"""``sidecar health``: ask a server's ``grpc.health.v1`` whether it is serving.

The container image's ``HEALTHCHECK`` runs this (Kubernetes uses its own ``grpc`` probes
instead). It works against every server of the project: the sidecar's admin address and the
event log's listen address both serve ``grpc.health.v1``.

Exit status: 0 when the server answers SERVING, 1 otherwise (not serving, unreachable, or no
answer within the timeout), 2 for bad usage (including a bad config or unreadable TLS files).
Blocks for at most ``--timeout-s``.

TLS: ``--tls-ca`` (and ``--tls-cert``/``--tls-key`` for a server that requires client
certificates) reach a server with TLS, e.g. an admin API with ``admin_tls``; ``--config FILE``
dials the sidecar config's ``admin_listen`` with TLS when it sets ``admin_tls`` (see
:mod:`sidecar.dial`).

Example::

    sidecar health --addr 127.0.0.1:15000
    sidecar health --config /etc/sidecar/sidecar.yaml --tls-ca /etc/sidecar/tls/ca.pem
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Final

from sidecar.cli_types import positive_finite_float
from sidecar.dial import add_tls_arguments

if TYPE_CHECKING:
    from sidecar.dial import ClientTls

HEALTH_ADDR_ENV: Final = "SIDECAR_HEALTH_ADDR"
"""Environment variable with the default ``--addr`` (the image sets it; the event log's
container overrides it with its own listen address)."""

DEFAULT_HEALTH_ADDR: Final = "127.0.0.1:15000"
"""The sidecar's default ``admin_listen``."""

DEFAULT_HEALTH_TIMEOUT_S: Final = 2.0


def check_health(address: str, service: str = "", timeout_s: float = DEFAULT_HEALTH_TIMEOUT_S,
                 tls: ClientTls | None = None) -> tuple[bool, str]:
    """Return ``(serving, what was seen)`` for ``service`` ("" = the whole server), over TLS
    when ``tls`` is given (its files are read now: ``TlsFileError`` if they cannot be)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from sidecar.dial import open_channel

    with open_channel(address, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            code = exc.code()
            return False, f"{code.name if code else 'UNKNOWN'}: {exc.details() or ''}".strip()
    status_name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status_name


def _run(args: argparse.Namespace) -> int:
    from sidecar.config import ConfigError, load_config
    from sidecar.dial import ClientTls, resolve_admin
    from sidecar.tls import TlsFileError

    if args.timeout_s <= 0:
        print("sidecar health: --timeout-s must be > 0", file=sys.stderr)
        return 2
    try:
        tls = ClientTls.from_args(args)
        address = args.addr
        if args.config is not None:
            config_address, tls = resolve_admin(load_config(args.config), tls)
            address = address or config_address
        address = address or _default_address()
        serving, seen = check_health(address, args.service, args.timeout_s, tls)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except TlsFileError as exc:
        print(f"sidecar health: {exc}", file=sys.stderr)
        return 2
    target = f"{address} service={args.service!r}" if args.service else address
    print(f"{target}: {seen}", file=sys.stdout if serving else sys.stderr)
    return 0 if serving else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sidecar health``."""
    parser = subparsers.add_parser(
        "health", help="check a server's grpc.health.v1 (exit 0 when SERVING)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--addr", default=None,
        help=f"HOST:PORT (default: the admin_listen of --config, else ${HEALTH_ADDR_ENV} or "
             f"{DEFAULT_HEALTH_ADDR})",
    )
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="a sidecar config: dial its admin_listen, with TLS when it sets "
                             "admin_tls")
    parser.add_argument("--service", default="", help='health service name (default: "")')
    parser.add_argument("--timeout-s", type=positive_finite_float,
                        default=DEFAULT_HEALTH_TIMEOUT_S,
                        help=f"give up after this many seconds (default: "
                             f"{DEFAULT_HEALTH_TIMEOUT_S})")
    add_tls_arguments(parser)
    parser.set_defaults(func=_run)


def _default_address() -> str:
    return os.environ.get(HEALTH_ADDR_ENV, DEFAULT_HEALTH_ADDR)
