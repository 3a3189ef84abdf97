"""``sidecar events query|tail``: clients of a running event log."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sidecar.cli_types import positive_finite_float
from sidecar.dial import add_tls_arguments
from sidecar.eventlog import settings as defaults
from sidecar.eventlog.cli_common import (
    fail,
    timestamp_ns,
)
from sidecar.v1 import events_pb2

EVENT_TYPES_HELP = ", ".join(
    field.message_type.name
    for field in events_pb2.Event.DESCRIPTOR.oneofs_by_name["payload"].fields
)
"""Every event type the proto defines, in field order (for ``--type``'s help)."""


def add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--eventlog", required=True, metavar="HOST:PORT",
                        help="address of a running `sidecar eventlog serve`")
    parser.add_argument("--service", default="")
    parser.add_argument("--instance", default="")
    parser.add_argument("--upstream", default="")
    parser.add_argument("--type", dest="types", action="append", default=[], metavar="TYPE",
                        help=f"{EVENT_TYPES_HELP} (repeat for several)")
    parser.add_argument("--from-time", type=timestamp_ns, default=0, metavar="ISO8601",
                        help="occurred at or after (e.g. 2025-01-31T12:00:00Z)")
    parser.add_argument("--to-time", type=timestamp_ns, default=0, metavar="ISO8601",
                        help="occurred before")
    parser.add_argument("--output", choices=["json", "table"], default="json",
                        help="json: one JSON object a line (default); table: for humans")
    parser.add_argument("--token-file", type=Path, default=None,
                        help=f"bearer token file (else ${defaults.ENV_TOKEN} / "
                        f"${defaults.ENV_TOKEN_FILE})")
    add_tls_arguments(parser)  # --tls-ca/-cert/-key/-server-name, as the admin clients
    parser.add_argument("--timeout-s", type=positive_finite_float, default=10.0, metavar="S",
                        help="deadline of each call (default 10)")


def _client_setup(prog: str, args: argparse.Namespace) -> tuple[Any, Any] | int:
    """(client, query) for the client commands, or an exit code after printing the problem."""
    from sidecar.dial import ClientTls
    from sidecar.eventlog.api.validation import EVENT_TYPES
    from sidecar.eventlog.client import EventQuery, connect

    unknown = [t for t in args.types if t not in EVENT_TYPES]
    if unknown:
        return fail(prog, f"--type: unknown {unknown}; known: {sorted(EVENT_TYPES)}", 2)
    try:
        defaults.parse_host_port(args.eventlog, "--eventlog")
        token = defaults.resolve_token(args.token_file)
        tls = ClientTls.from_args(args)
        client = connect(args.eventlog, token=token, tls=tls, timeout_s=args.timeout_s)
    except (ValueError, OSError) as exc:
        return fail(prog, str(exc), 2)
    query = EventQuery(
        service=args.service,
        instance=args.instance,
        upstream=args.upstream,
        types=tuple(args.types),
        from_time_ns=args.from_time,
        to_time_ns=args.to_time,
    )
    return client, query


def _printer(output: str) -> Callable[[Any], None]:
    from sidecar.eventlog.client import TABLE_HEADER, json_line, table_row

    if output == "table":
        print(TABLE_HEADER, flush=True)
        return lambda event: print(table_row(event), flush=True)
    return lambda event: print(json_line(event), flush=True)


def _rpc_failure(prog: str, exc: Exception) -> int:
    import grpc

    from sidecar.eventlog.client import EventLogUnreachable

    if isinstance(exc, EventLogUnreachable):
        return fail(prog, str(exc), 1)
    if isinstance(exc, grpc.RpcError):
        code = exc.code().name if hasattr(exc, "code") else "ERROR"
        details = exc.details() if hasattr(exc, "details") else str(exc)
        status = 2 if code == "INVALID_ARGUMENT" else 1
        return fail(prog, f"{code}: {details}", status)
    raise exc


def query_command(args: argparse.Namespace) -> int:
    import grpc

    from sidecar.eventlog.client import EventLogUnreachable

    prog = "sidecar events query"
    setup = _client_setup(prog, args)
    if isinstance(setup, int):
        return setup
    client, query = setup
    with client:
        try:
            events = client.query(query, from_position=args.from_position, limit=args.limit)
            first = next(events, None)
            emit = _printer(args.output)
            if first is not None:
                emit(first)
                for event in events:
                    emit(event)
        except (EventLogUnreachable, grpc.RpcError) as exc:
            return _rpc_failure(prog, exc)
    return 0


def tail_command(args: argparse.Namespace) -> int:
    import grpc

    from sidecar.eventlog.client import EventLogUnreachable, resume_position_of

    prog = "sidecar events tail"
    setup = _client_setup(prog, args)
    if isinstance(setup, int):
        return setup
    client, query = setup
    with client:
        try:
            position = args.from_position or client.head_position() + 1
        except (EventLogUnreachable, grpc.RpcError) as exc:
            return _rpc_failure(prog, exc)
        emit = _printer(args.output)
        printed = 0
        while True:
            call = client.subscribe(query, position)
            try:
                for message in call:
                    if message.WhichOneof("message") != "event":
                        continue
                    emit(message.event)
                    position = message.event.global_position + 1
                    printed += 1
                    if args.count is not None and printed >= args.count:
                        call.cancel()
                        return 0
                return fail(prog, "the event log ended the subscription", 1)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    # Our own cursor is exact; the server's hint is for clients that lost it.
                    hint = resume_position_of(exc)
                    print(f"{prog}: fell behind (server says resume from {hint}); resuming "
                          f"from position {position}", file=sys.stderr, flush=True)
                    continue
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    return fail(prog, f"cannot reach the event log at {args.eventlog}: "
                                 f"{exc.details()}", 1)
                return _rpc_failure(prog, exc)
            except KeyboardInterrupt:
                call.cancel()
                return 0
