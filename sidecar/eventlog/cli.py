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
from pathlib import Path

from sidecar.cli_types import non_negative_finite_float, positive_finite_float
from sidecar.eventlog import nats_auth
from sidecar.eventlog import settings as defaults
from sidecar.eventlog.cli_client import add_client_options, query_command, tail_command
from sidecar.eventlog.cli_common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STATUS_HELP,
    EXIT_USAGE,
    SERVE_PROG,
    SubParsers,
    fail,
    open_store_or_fail,
    positive_int,
    store_failure,
)
from sidecar.eventlog.cli_offline import heads_command, rebuild_command, verify_command
from sidecar.eventlog.retention import policy as retention


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
        epilog=EXIT_STATUS_HELP,
    )
    verify.add_argument("--store", required=True,
                        help="store URL of an existing log: sqlite:///PATH or nats://H:P")
    nats_auth.add_arguments(verify)
    verify.add_argument("--against", metavar="FILE", default=None,
                        help="also check that no stream is behind, or has another hash at, the "
                             "heads saved in FILE by `sidecar eventlog heads`")
    verify.set_defaults(func=verify_command)

    heads = eventlog_sub.add_parser(
        "heads", help="print every stream's head (version, hash) as JSON lines, to save for "
                      "`verify --against`", epilog=EXIT_STATUS_HELP)
    heads.add_argument("--store", required=True,
                       help="store URL of an existing log: sqlite:///PATH or nats://H:P")
    nats_auth.add_arguments(heads)
    heads.set_defaults(func=heads_command)

    rebuild = eventlog_sub.add_parser(
        "rebuild", help="rebuild every projection from the log and replace its checkpoint",
        epilog=EXIT_STATUS_HELP,
    )
    rebuild.add_argument("--store", required=True,
                         help="store URL of an existing log: sqlite:///PATH or nats://H:P")
    nats_auth.add_arguments(rebuild)
    rebuild.set_defaults(func=rebuild_command)

    events = subparsers.add_parser("events", help="query or follow a running event log")
    events_sub = events.add_subparsers(dest="events_command", metavar="SUBCOMMAND")
    events.set_defaults(func=lambda _args: _usage(events))

    query = events_sub.add_parser("query", help="print stored events (JSON lines or a table)")
    add_client_options(query)
    query.add_argument("--from-position", type=positive_int, default=1, metavar="N")
    query.add_argument("--limit", type=positive_int, default=None, metavar="N",
                       help="print at most N events (default: all up to the current head)")
    query.set_defaults(func=query_command)

    tail = events_sub.add_parser("tail", help="follow new events live (Subscribe)")
    add_client_options(tail)
    tail.add_argument("--from-position", type=positive_int, default=None, metavar="N",
                      help="start here instead of at the current head (catch up first)")
    tail.add_argument("--count", type=positive_int, default=None, metavar="N",
                      help="exit 0 after N events")
    tail.set_defaults(func=tail_command)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _add_serve(eventlog_sub: SubParsers) -> None:
    serve = eventlog_sub.add_parser(
        "serve", help="serve sidecar.v1.EventLog (gRPC) and /metrics",
        description="Serve the event log. The bearer token comes from --token-file, else "
        f"${defaults.ENV_TOKEN}, else the file named by ${defaults.ENV_TOKEN_FILE}.",
        epilog=EXIT_STATUS_HELP,
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
    serve.add_argument("--max-message-bytes", type=positive_int,
                       default=defaults.DEFAULT_MAX_MESSAGE_BYTES, metavar="N")
    serve.add_argument("--max-batch-events", type=positive_int,
                       default=defaults.DEFAULT_MAX_BATCH_EVENTS, metavar="N")
    serve.add_argument("--max-pending-appends", type=positive_int,
                       default=defaults.DEFAULT_MAX_PENDING_APPENDS, metavar="N",
                       help="Append requests served at once; more are refused with "
                       "RESOURCE_EXHAUSTED and a retry hint")
    serve.add_argument("--subscriber-buffer-events", type=positive_int,
                       default=defaults.DEFAULT_SUBSCRIBER_BUFFER_EVENTS, metavar="N",
                       help="live events queued per subscriber before it is dropped as slow")
    serve.add_argument("--max-subscribers", type=positive_int,
                       default=defaults.DEFAULT_MAX_SUBSCRIBERS, metavar="N")
    serve.add_argument("--heartbeat-interval-s", type=positive_finite_float,
                       default=defaults.DEFAULT_HEARTBEAT_INTERVAL_S, metavar="S")
    serve.add_argument("--shutdown-grace-s", type=non_negative_finite_float,
                       default=defaults.DEFAULT_SHUTDOWN_GRACE_S, metavar="S")
    serve.add_argument("--retain-days", type=positive_finite_float, default=None, metavar="D",
                       help="delete events recorded more than D days ago (default: keep all)")
    serve.add_argument("--retain-events-per-stream", type=positive_int, default=None, metavar="N",
                       help="delete a stream's events once N newer ones follow (default: all)")
    serve.add_argument("--retention-interval-s", type=positive_finite_float,
                       default=retention.DEFAULT_RETENTION_INTERVAL_S, metavar="S",
                       help="how often retention looks for events to delete")
    serve.add_argument("--retention-cut-events", type=positive_int,
                       default=retention.DEFAULT_RETENTION_CUT_EVENTS, metavar="N",
                       help="most events one deletion step removes (one store transaction)")
    serve.add_argument("--log-level", default="INFO",
                       choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.set_defaults(func=_serve)


# --- serve ---


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from sidecar.eventlog.port import StoreError, allows_retention
    from sidecar.eventlog.server import serve

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
        return fail(SERVE_PROG, f"{exc.filename or ''}: {exc.strerror or exc}", EXIT_USAGE)
    except ValueError as exc:
        return fail(SERVE_PROG, str(exc), EXIT_USAGE)
    store = open_store_or_fail(SERVE_PROG, settings.store_url, create=True, nats_auth=auth)
    if isinstance(store, int):
        return store

    async def run() -> None:
        await serve(settings, store)

    try:
        asyncio.run(run())
    except StoreError as exc:
        return store_failure(SERVE_PROG, settings.store_url, exc)
    except OSError as exc:
        return fail(SERVE_PROG, str(exc), EXIT_FAILED)
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
