"""Subcommands of the event log concern (registered by sidecar.cli).

``sidecar eventlog serve|verify|rebuild`` run the server and its offline tools against a store
URL; ``sidecar events query|tail`` are clients of a running server.

Exit status (``EXIT_*`` below): 0 success; 1 a failed check (``verify`` found a break) or a
store/log that cannot be reached or opened (NATS down, a SQLite file that is missing for
``verify``/``rebuild`` or cannot be created/opened for ``serve``); 2 bad usage or configuration
(a malformed ``--store`` URL, an unknown option, a missing token or TLS file). A store problem
is one line on stderr naming the store URL and the problem, never a traceback.

Heavy imports (grpc, the store, the server) happen inside the handlers.

Examples::

    sidecar eventlog serve --store sqlite:///var/lib/eventlog.db --listen 127.0.0.1:7070 \\
        --metrics-listen 127.0.0.1:9465 --token-file /run/secrets/eventlog-token
    sidecar events query --eventlog 127.0.0.1:7070 --service checkout --type BreakerTransitioned
    sidecar events tail --eventlog 127.0.0.1:7070 --output table
    sidecar eventlog verify --store sqlite:///var/lib/eventlog.db
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeAlias

from sidecar.cli_types import non_negative_finite_float, positive_finite_float
from sidecar.eventlog import nats_auth, retention
from sidecar.eventlog import settings as defaults
from sidecar.v1 import events_pb2

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
SERVE_PROG = "sidecar eventlog serve"
VERIFY_PROG = "sidecar eventlog verify"
REBUILD_PROG = "sidecar eventlog rebuild"

EXIT_OK = 0
EXIT_FAILED = 1
"""A failed check, or a store / event log that cannot be reached or opened."""
EXIT_USAGE = 2
"""Bad usage or configuration (e.g. a malformed --store URL)."""

_EXIT_STATUS_HELP = (
    "exit status: 0 ok; 1 a failed check or a store that cannot be reached or opened; "
    "2 bad usage (e.g. a malformed --store URL)"
)


def _fail(prog: str, message: str, code: int) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def _timestamp_ns(value: str) -> int:
    """argparse type: an ISO 8601 time (``2025-01-31T12:00:00Z``) → nanoseconds since epoch."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r} has no time zone (add Z or +00:00)")
    return int(moment.timestamp() * 1_000_000) * 1000


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def register(subparsers: SubParsers) -> None:
    """Add ``sidecar eventlog ...`` and ``sidecar events ...``."""
    eventlog = subparsers.add_parser(
        "eventlog", help="run the breaker event log service, audit and rebuild it"
    )
    eventlog_sub = eventlog.add_subparsers(dest="eventlog_command", metavar="SUBCOMMAND")
    eventlog.set_defaults(func=lambda _args: _usage(eventlog))
    _add_serve(eventlog_sub)

    verify = eventlog_sub.add_parser(
        "verify", help="walk every stream's hash chain; exit 1 naming the first break",
        epilog=_EXIT_STATUS_HELP,
    )
    verify.add_argument("--store", required=True,
                        help="store URL of an existing log: sqlite:///PATH or nats://H:P")
    nats_auth.add_arguments(verify)
    verify.add_argument("--against", metavar="FILE", default=None,
                        help="also check that no stream is behind, or has another hash at, the "
                             "heads saved in FILE by `sidecar eventlog heads`")
    verify.set_defaults(func=_verify)

    heads = eventlog_sub.add_parser(
        "heads", help="print every stream's head (version, hash) as JSON lines, to save for "
                      "`verify --against`", epilog=_EXIT_STATUS_HELP)
    heads.add_argument("--store", required=True,
                       help="store URL of an existing log: sqlite:///PATH or nats://H:P")
    nats_auth.add_arguments(heads)
    heads.set_defaults(func=_heads)

    rebuild = eventlog_sub.add_parser(
        "rebuild", help="rebuild every projection from the log and replace its checkpoint",
        epilog=_EXIT_STATUS_HELP,
    )
    rebuild.add_argument("--store", required=True,
                         help="store URL of an existing log: sqlite:///PATH or nats://H:P")
    nats_auth.add_arguments(rebuild)
    rebuild.set_defaults(func=_rebuild)

    events = subparsers.add_parser("events", help="query or follow a running event log")
    events_sub = events.add_subparsers(dest="events_command", metavar="SUBCOMMAND")
    events.set_defaults(func=lambda _args: _usage(events))

    query = events_sub.add_parser("query", help="print stored events (JSON lines or a table)")
    _add_client_options(query)
    query.add_argument("--from-position", type=_positive, default=1, metavar="N")
    query.add_argument("--limit", type=_positive, default=None, metavar="N",
                       help="print at most N events (default: all up to the current head)")
    query.set_defaults(func=_query)

    tail = events_sub.add_parser("tail", help="follow new events live (Subscribe)")
    _add_client_options(tail)
    tail.add_argument("--from-position", type=_positive, default=None, metavar="N",
                      help="start here instead of at the current head (catch up first)")
    tail.add_argument("--count", type=_positive, default=None, metavar="N",
                      help="exit 0 after N events")
    tail.set_defaults(func=_tail)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _add_serve(eventlog_sub: SubParsers) -> None:
    serve = eventlog_sub.add_parser(
        "serve", help="serve sidecar.v1.EventLog (gRPC) and /metrics",
        description="Serve the event log. The bearer token comes from --token-file, else "
        f"${defaults.ENV_TOKEN}, else the file named by ${defaults.ENV_TOKEN_FILE}.",
        epilog=_EXIT_STATUS_HELP,
    )
    serve.add_argument("--store", required=True,
                       help="store URL: sqlite:///PATH, nats://H:P or tls://H:P")
    serve.add_argument("--listen", default=defaults.DEFAULT_LISTEN, metavar="HOST:PORT")
    serve.add_argument("--metrics-listen", default=None, metavar="HOST:PORT",
                       help="serve Prometheus /metrics here (default: off)")
    nats_auth.add_arguments(serve)
    serve.add_argument("--metrics-tls-cert", type=Path, default=None,
                       help="serve /metrics over HTTPS with this certificate (PEM)")
    serve.add_argument("--metrics-tls-key", type=Path, default=None,
                       help="private key of --metrics-tls-cert (PEM)")
    serve.add_argument("--token-file", type=Path, default=None,
                       help="file holding the bearer token required for Append")
    serve.add_argument("--reads-require-token", action="store_true",
                       help="reads need the token too (also "
                       f"${defaults.ENV_READS_REQUIRE_TOKEN}=1)")
    serve.add_argument("--tls-cert", type=Path, default=None, help="server certificate (PEM)")
    serve.add_argument("--tls-key", type=Path, default=None, help="server private key (PEM)")
    serve.add_argument("--tls-client-ca", type=Path, default=None,
                       help="require client certificates signed by this CA (mTLS)")
    serve.add_argument("--max-message-bytes", type=_positive,
                       default=defaults.DEFAULT_MAX_MESSAGE_BYTES, metavar="N")
    serve.add_argument("--max-batch-events", type=_positive,
                       default=defaults.DEFAULT_MAX_BATCH_EVENTS, metavar="N")
    serve.add_argument("--max-pending-appends", type=_positive,
                       default=defaults.DEFAULT_MAX_PENDING_APPENDS, metavar="N",
                       help="Append requests served at once; more are refused with "
                       "RESOURCE_EXHAUSTED and a retry hint")
    serve.add_argument("--subscriber-buffer-events", type=_positive,
                       default=defaults.DEFAULT_SUBSCRIBER_BUFFER_EVENTS, metavar="N",
                       help="live events queued per subscriber before it is dropped as slow")
    serve.add_argument("--max-subscribers", type=_positive,
                       default=defaults.DEFAULT_MAX_SUBSCRIBERS, metavar="N")
    serve.add_argument("--heartbeat-interval-s", type=positive_finite_float,
                       default=defaults.DEFAULT_HEARTBEAT_INTERVAL_S, metavar="S")
    serve.add_argument("--shutdown-grace-s", type=non_negative_finite_float,
                       default=defaults.DEFAULT_SHUTDOWN_GRACE_S, metavar="S")
    serve.add_argument("--retain-days", type=positive_finite_float, default=None, metavar="D",
                       help="delete events recorded more than D days ago (default: keep all)")
    serve.add_argument("--retain-events-per-stream", type=_positive, default=None, metavar="N",
                       help="delete a stream's events once N newer ones follow (default: all)")
    serve.add_argument("--retention-interval-s", type=positive_finite_float,
                       default=retention.DEFAULT_RETENTION_INTERVAL_S, metavar="S",
                       help="how often retention looks for events to delete")
    serve.add_argument("--retention-cut-events", type=_positive,
                       default=retention.DEFAULT_RETENTION_CUT_EVENTS, metavar="N",
                       help="most events one deletion step removes (one store transaction)")
    serve.add_argument("--log-level", default="INFO",
                       choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.set_defaults(func=_serve)

_EVENT_TYPES_HELP = ", ".join(
    field.message_type.name
    for field in events_pb2.Event.DESCRIPTOR.oneofs_by_name["payload"].fields
)
"""Every event type the proto defines, in field order (for ``--type``'s help)."""


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--eventlog", required=True, metavar="HOST:PORT",
                        help="address of a running `sidecar eventlog serve`")
    parser.add_argument("--service", default="")
    parser.add_argument("--instance", default="")
    parser.add_argument("--upstream", default="")
    parser.add_argument("--type", dest="types", action="append", default=[], metavar="TYPE",
                        help=f"{_EVENT_TYPES_HELP} (repeat for several)")
    parser.add_argument("--from-time", type=_timestamp_ns, default=0, metavar="ISO8601",
                        help="occurred at or after (e.g. 2025-01-31T12:00:00Z)")
    parser.add_argument("--to-time", type=_timestamp_ns, default=0, metavar="ISO8601",
                        help="occurred before")
    parser.add_argument("--output", choices=["json", "table"], default="json",
                        help="json: one JSON object a line (default); table: for humans")
    parser.add_argument("--token-file", type=Path, default=None,
                        help=f"bearer token file (else ${defaults.ENV_TOKEN} / "
                        f"${defaults.ENV_TOKEN_FILE})")
    parser.add_argument("--tls-ca", type=Path, default=None, help="CA of the server (PEM)")
    parser.add_argument("--tls-cert", type=Path, default=None, help="client certificate (mTLS)")
    parser.add_argument("--tls-key", type=Path, default=None, help="client key (mTLS)")
    parser.add_argument("--timeout-s", type=positive_finite_float, default=10.0, metavar="S",
                        help="deadline of each call (default 10)")


# --- server-side commands ------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from sidecar.eventlog.server import serve
    from sidecar.eventlog.store import StoreError
    from sidecar.eventlog.stores import allows_retention

    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if (args.tls_cert is None) != (args.tls_key is None):
            raise ValueError("tls: --tls-cert and --tls-key go together")
        if args.tls_client_ca is not None and args.tls_cert is None:
            raise ValueError("tls: --tls-client-ca needs --tls-cert and --tls-key")
        tls = (
            defaults.TlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca)
            if args.tls_cert is not None
            else None
        )
        if tls is not None:
            tls.read()  # fail now, naming the file, rather than at bind time
        metrics_tls = _metrics_tls(args)
        auth = nats_auth.from_arguments(args)
        settings = defaults.ServerSettings(
            store_url=args.store,
            listen=args.listen,
            metrics_listen=args.metrics_listen,
            metrics_tls=metrics_tls,
            token=defaults.resolve_token(args.token_file),
            reads_require_token=args.reads_require_token
            or defaults.env_flag(defaults.ENV_READS_REQUIRE_TOKEN),
            tls=tls,
            max_message_bytes=args.max_message_bytes,
            max_batch_events=args.max_batch_events,
            max_pending_appends=args.max_pending_appends,
            subscriber_buffer_events=args.subscriber_buffer_events,
            max_subscribers=args.max_subscribers,
            default_heartbeat_interval_s=args.heartbeat_interval_s,
            shutdown_grace_s=args.shutdown_grace_s,
            retention=_retention_policy(args),
        )
        if settings.retention is not None and not allows_retention(settings.store_url):
            raise ValueError(
                "--retain-days/--retain-events-per-stream: the JetStream stream must allow "
                "purges: add retention=1 to the --store URL (a new stream is created without "
                "deny_purge; JetStream cannot lift deny_purge from an existing stream)")
    except OSError as exc:
        return _fail(SERVE_PROG, f"{exc.filename or ''}: {exc.strerror or exc}", EXIT_USAGE)
    except ValueError as exc:
        return _fail(SERVE_PROG, str(exc), EXIT_USAGE)
    store = _open_store_or_fail(SERVE_PROG, settings.store_url, create=True, nats_auth=auth)
    if isinstance(store, int):
        return store

    async def run() -> None:
        await serve(settings, store)

    try:
        asyncio.run(run())
    except StoreError as exc:
        return _store_failure(SERVE_PROG, settings.store_url, exc)
    except OSError as exc:
        return _fail(SERVE_PROG, str(exc), EXIT_FAILED)
    return EXIT_OK


def _metrics_tls(args: argparse.Namespace) -> tuple[Path, Path] | None:
    """``(cert, key)`` for HTTPS on ``/metrics``; ``ValueError``/``OSError`` naming the flag or
    file when only one is given, a file is unreadable, or the pair does not load."""
    import ssl

    cert, key = args.metrics_tls_cert, args.metrics_tls_key
    if (cert is None) != (key is None):
        raise ValueError("metrics tls: --metrics-tls-cert and --metrics-tls-key go together")
    if cert is None or key is None:
        return None
    if args.metrics_listen is None:
        raise ValueError("metrics tls: --metrics-tls-cert needs --metrics-listen")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ValueError(f"metrics tls: {cert} / {key}: {exc.reason or exc}") from None
    return cert, key


def _store_failure(prog: str, url: str, exc: Exception) -> int:
    """One line naming the store and its problem (credentials in URLs masked); exit 1."""
    import re

    problem = str(exc)
    subject, sep, rest = problem.partition(": ")
    if sep and subject in url:  # "/var/x.db: does not exist": the URL names it already
        problem = rest
    line = " ".join(f"store {url}: {problem}".split())  # one line, whatever the message holds
    return _fail(prog, re.sub(r"(?<=[/,])[^/,@\s]+@", "***@", line), EXIT_FAILED)


def _open_store_or_fail(prog: str, url: str, *, create: bool,
                        nats_auth: object | None = None) -> Any:
    """The store for ``url``, or an exit code after printing the problem (2: a malformed URL;
    1: a SQLite file that cannot be opened, or is missing when ``create`` is false)."""
    from sidecar.eventlog.store import StoreError
    from sidecar.eventlog.stores import open_store

    try:
        return open_store(url, create=create, nats_auth=nats_auth)
    except StoreError as exc:
        return _store_failure(prog, url, exc)
    except ValueError as exc:
        return _fail(prog, str(exc), EXIT_USAGE)


def _run_offline(prog: str, url: str, work: Callable[[Any], Any],
                 args: argparse.Namespace | None = None) -> tuple[Any, int | None]:
    """Open the store at ``url`` (which must exist), run ``await work(store)`` and close it.

    Returns (result, None), or (None, exit code) after printing one line: a store that cannot
    be opened or reached is exit 1, a malformed URL exit 2, Ctrl-C exit 130.
    """
    import asyncio

    from sidecar.eventlog.store import StoreError

    try:  # the --nats-* flags (TLS files, credential) of verify and rebuild
        auth = nats_auth.from_arguments(args) if args is not None else None
    except ValueError as exc:
        return None, _fail(prog, str(exc), EXIT_USAGE)
    store = _open_store_or_fail(prog, url, create=False, nats_auth=auth)
    if isinstance(store, int):
        return None, store

    async def run() -> Any:
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run()), None
    except StoreError as exc:
        return None, _store_failure(prog, url, exc)
    except KeyboardInterrupt:
        return None, _fail(prog, "interrupted", 130)


def _verify(args: argparse.Namespace) -> int:
    from sidecar.eventlog.audit import verify

    if getattr(args, "against", None) is not None:
        return _verify_against(args)
    report, failed = _run_offline(VERIFY_PROG, args.store, verify, args)
    if failed is not None:
        return failed
    print(report.summary())
    return EXIT_OK if report.ok else EXIT_FAILED


def _verify_against(args: argparse.Namespace) -> int:
    """``verify`` plus the heads saved in ``--against``: one line per stream the log lost."""
    from sidecar.eventlog.audit import verify
    from sidecar.eventlog.heads import check_against, parse_heads

    try:
        saved = parse_heads(Path(args.against).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return _fail(VERIFY_PROG, f"--against {args.against}: {exc}", EXIT_USAGE)

    async def work(store: Any) -> tuple[Any, Any]:
        return await verify(store), await check_against(store, saved)

    result, failed = _run_offline(VERIFY_PROG, args.store, work, args)
    if failed is not None:
        return failed
    report, breaks = result
    print(report.summary())
    for lost in breaks:
        print(f"{VERIFY_PROG}: {lost}")
    print(f"{len(saved)} saved heads checked, {len(breaks)} behind or changed")
    return EXIT_OK if report.ok and not breaks else EXIT_FAILED


def _heads(args: argparse.Namespace) -> int:
    """Every stream's head as JSON lines on stdout (``> FILE`` for ``verify --against``)."""
    from sidecar.eventlog.heads import format_heads, read_heads

    heads, failed = _run_offline("sidecar eventlog heads", args.store, read_heads, args)
    if failed is not None:
        return failed
    sys.stdout.write(format_heads(heads))
    return EXIT_OK


def _retention_policy(args: argparse.Namespace) -> retention.RetentionPolicy | None:
    """The ``--retain-*`` flags as a policy (None: keep everything)."""
    if args.retain_days is None and args.retain_events_per_stream is None:
        return None
    return retention.RetentionPolicy(
        retain_days=args.retain_days,
        retain_events_per_stream=args.retain_events_per_stream,
        interval_s=args.retention_interval_s,
        cut_events=args.retention_cut_events,
    )


def _rebuild(args: argparse.Namespace) -> int:
    import time

    from sidecar.eventlog.follower import server_projections
    from sidecar.eventlog.projection_runner import rebuild

    async def work(store: Any) -> tuple[int, int, float, str]:
        started = time.perf_counter()
        runner = await rebuild(store, server_projections())
        start = runner.started_from
        origin = start.describe() if start is not None else "the start of the log"
        return runner.events_folded, runner.position, time.perf_counter() - started, origin

    result, failed = _run_offline(REBUILD_PROG, args.store, work, args)
    if failed is not None:
        return failed
    folded, position, elapsed_s, origin = result
    rate = folded / elapsed_s if elapsed_s > 0 else 0.0
    print(
        f"rebuilt {len(server_projections())} projections from {origin} up to position "
        f"{position}: {folded} events in {elapsed_s:.2f}s ({rate:,.0f} events/s)"
    )
    return EXIT_OK


# --- client commands ------------------------------------------------------------------------------


def _client_setup(prog: str, args: argparse.Namespace) -> tuple[Any, Any] | int:
    """(client, query) for the client commands, or an exit code after printing the problem."""
    from sidecar.eventlog.client import ClientTls, EventQuery, connect
    from sidecar.eventlog.validation import EVENT_TYPES

    unknown = [t for t in args.types if t not in EVENT_TYPES]
    if unknown:
        return _fail(prog, f"--type: unknown {unknown}; known: {sorted(EVENT_TYPES)}", 2)
    try:
        defaults.parse_host_port(args.eventlog, "--eventlog")
        token = defaults.resolve_token(args.token_file)
        tls = None
        if args.tls_ca or args.tls_cert or args.tls_key:
            tls = ClientTls(args.tls_ca, args.tls_cert, args.tls_key)
        client = connect(args.eventlog, token=token, tls=tls, timeout_s=args.timeout_s)
    except (ValueError, OSError) as exc:
        return _fail(prog, str(exc), 2)
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
        return _fail(prog, str(exc), 1)
    if isinstance(exc, grpc.RpcError):
        code = exc.code().name if hasattr(exc, "code") else "ERROR"
        details = exc.details() if hasattr(exc, "details") else str(exc)
        status = 2 if code == "INVALID_ARGUMENT" else 1
        return _fail(prog, f"{code}: {details}", status)
    raise exc


def _query(args: argparse.Namespace) -> int:
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


def _tail(args: argparse.Namespace) -> int:
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
                return _fail(prog, "the event log ended the subscription", 1)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    # Our own cursor is exact; the server's hint is for clients that lost it.
                    hint = resume_position_of(exc)
                    print(f"{prog}: fell behind (server says resume from {hint}); resuming "
                          f"from position {position}", file=sys.stderr, flush=True)
                    continue
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    return _fail(prog, f"cannot reach the event log at {args.eventlog}: "
                                 f"{exc.details()}", 1)
                return _rpc_failure(prog, exc)
            except KeyboardInterrupt:
                call.cancel()
                return 0
