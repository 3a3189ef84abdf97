"""``sidecar proxy``, ``sidecar breakers`` and ``sidecar endpoints`` (registered by sidecar.cli).

``sidecar proxy --config FILE`` runs the proxy until SIGTERM (exit 0 after draining). A bad or
missing config file prints one ``key.path: problem`` line each to stderr and exits 2; a port
that cannot be bound exits 1.

``sidecar breakers --admin HOST:PORT [--output table|json]`` lists the breakers of a running
sidecar; ``json`` prints one JSON array (states and modes in lower case, as in metrics labels).
``sidecar endpoints`` (same options, plus ``--upstream NAME``) lists each upstream's endpoints.
An admin API served with ``admin_tls`` takes ``--tls-ca`` (and ``--tls-cert``/``--tls-key``
when it requires client certificates); ``--config FILE`` instead of ``--admin`` takes the
address from the file's ``admin_listen`` and turns TLS on when it sets ``admin_tls`` (see
:mod:`sidecar.dial`). Exit 2 for bad options, a bad config or unreadable TLS files, 1 when the
admin API cannot be reached.

Plugins: :data:`PLUGIN_FACTORIES` names ``module:function`` entries called as
``function(config, breakers, registry=registry) -> ProxyPlugin`` (``breakers`` is the proxy's
:class:`~sidecar.protection.BreakerRegistry`, ``registry`` the one Prometheus
``CollectorRegistry`` every plugin registers its metrics in, served on ``metrics_listen``) to plug
telemetry/events into ``sidecar proxy``; a factory module that cannot be imported is an error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING, Any, Final

from sidecar.cli_types import positive_finite_float
from sidecar.dial import add_tls_arguments
from sidecar.text_table import render_table

if TYPE_CHECKING:
    from sidecar.config import SidecarConfig
    from sidecar.protection import BreakerRegistry, ProxyPlugin

PLUGIN_FACTORIES: tuple[str, ...] = (
    "sidecar.telemetry.plugin:proxy_plugin",
    "sidecar.events.plugin:proxy_plugin",
)
"""``module:function`` plugin factories for ``sidecar proxy`` (see the module docstring)."""

DEFAULT_ADMIN_TIMEOUT_S: Final = 5.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``proxy`` and ``breakers``."""
    proxy = subparsers.add_parser(
        "proxy", help="run the sidecar proxy",
        description="Run the gRPC pass-through proxy with breakers (SIGHUP reloads the config, "
                    "SIGTERM drains and exits).")
    proxy.add_argument("--config", required=True, metavar="FILE", help="YAML config file")
    proxy.set_defaults(func=_run_proxy)

    breakers = subparsers.add_parser(
        "breakers", help="list the breakers of a running sidecar",
        description="List the breakers of a running sidecar through its admin API.")
    target = breakers.add_mutually_exclusive_group(required=True)
    target.add_argument("--admin", metavar="HOST:PORT", help="the sidecar's admin_listen address")
    target.add_argument("--config", metavar="FILE",
                        help="the sidecar's config file: dial its admin_listen, with TLS when it "
                             "sets admin_tls")
    breakers.add_argument("--output", choices=("table", "json"), default="table")
    breakers.add_argument("--timeout", type=positive_finite_float, default=DEFAULT_ADMIN_TIMEOUT_S,
                          metavar="SECONDS", help="deadline of the admin call")
    add_tls_arguments(breakers)
    breakers.set_defaults(func=_list_breakers)

    endpoints = subparsers.add_parser(
        "endpoints", help="list the endpoints of a running sidecar's upstreams",
        description="List each upstream's endpoints (state, latency estimate, calls in flight, "
                    "ejections) through the sidecar's admin API.")
    target = endpoints.add_mutually_exclusive_group(required=True)
    target.add_argument("--admin", metavar="HOST:PORT", help="the sidecar's admin_listen address")
    target.add_argument("--config", metavar="FILE",
                        help="the sidecar's config file: dial its admin_listen, with TLS when it "
                             "sets admin_tls")
    endpoints.add_argument("--upstream", metavar="NAME", help="only this upstream")
    endpoints.add_argument("--output", choices=("table", "json"), default="table")
    endpoints.add_argument("--timeout", type=positive_finite_float,
                           default=DEFAULT_ADMIN_TIMEOUT_S,
                           metavar="SECONDS", help="deadline of the admin call")
    add_tls_arguments(endpoints)
    endpoints.set_defaults(func=_list_endpoints)


def _plugins(config: SidecarConfig, breakers: BreakerRegistry) -> list[ProxyPlugin]:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()  # one /metrics for every plugin
    plugins = []
    for entry in PLUGIN_FACTORIES:
        module_name, _, function = entry.partition(":")
        factory: Any = getattr(import_module(module_name), function)
        plugins.append(factory(config, breakers, registry=registry))
    return plugins


def _run_proxy(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from sidecar.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    from sidecar.telemetry.logging import configure_logging

    logs = configure_logging(config.logging.level)  # JSON lines on stderr, never blocking

    from sidecar.proxy.app import ProxyApp

    async def main() -> None:
        app = ProxyApp(config)
        for plugin in _plugins(config, app.breakers):
            app.add_plugin(plugin)
        await app.serve(config_path=args.config)

    try:
        asyncio.run(main())
    except RuntimeError as exc:
        logging.getLogger("sidecar.proxy").error("%s", exc, extra={"event": "error"})
        return 1
    finally:
        logs.close()
    return 0


def _admin_call(args: argparse.Namespace, command: str,
                rpc: Callable[[Any, float], Any]) -> Any:
    """Dial the admin API the options name (``--admin`` or ``--config``, TLS options) and make
    one call; an ``int`` is the exit status after printing why (2: bad options or files,
    1: unreachable or refused)."""
    import grpc

    from sidecar.config import ConfigError, load_config
    from sidecar.dial import ClientTls, open_channel, resolve_admin
    from sidecar.tls import TlsFileError
    from sidecar.v1 import admin_pb2_grpc

    try:
        tls = ClientTls.from_args(args)
        address = args.admin
        if args.config is not None:
            address, tls = resolve_admin(load_config(args.config), tls)
        channel = open_channel(address, tls)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except TlsFileError as exc:
        print(f"sidecar {command}: {exc}", file=sys.stderr)
        return 2
    try:
        with channel:
            stub = admin_pb2_grpc.SidecarAdminStub(channel)  # type: ignore[no-untyped-call]
            return rpc(stub, args.timeout)
    except grpc.RpcError as exc:
        hint = (" (if it serves admin_tls: pass --tls-ca and, for mTLS, --tls-cert/--tls-key,"
                " or --config)"
                if tls is None and exc.code() is grpc.StatusCode.UNAVAILABLE else "")
        print(f"sidecar {command}: {address}: {exc.code().name}: {exc.details()}{hint}",
              file=sys.stderr)
        return 1


def _list_breakers(args: argparse.Namespace) -> int:
    import json

    from sidecar.v1 import admin_pb2

    response = _admin_call(args, "breakers", lambda stub, timeout: stub.ListBreakers(
        admin_pb2.ListBreakersRequest(), timeout=timeout))
    if isinstance(response, int):
        return response
    rows = [breaker_dict(info) for info in response.breakers]
    if args.output == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
    return 0


def _list_endpoints(args: argparse.Namespace) -> int:
    import json

    from sidecar.proxy.admin_endpoints import endpoint_rows, format_endpoints_table
    from sidecar.v1 import admin_pb2

    response = _admin_call(args, "endpoints", lambda stub, timeout: stub.ListEndpoints(
        admin_pb2.ListEndpointsRequest(upstream=args.upstream or ""), timeout=timeout))
    if isinstance(response, int):
        return response
    rows = endpoint_rows(response)
    if args.output == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(format_endpoints_table(rows))
    return 0


def breaker_dict(info: Any) -> dict[str, Any]:
    """A ``BreakerInfo`` as plain JSON-able data (lower-case states/modes, RFC 3339 times)."""
    from sidecar.breaker_protos import state_name
    from sidecar.v1 import events_pb2

    def state(value: int) -> str:
        return state_name(value).lower()

    def when(stamp: Any) -> str:
        return str(stamp.ToJsonString())

    window = info.window
    last = info.last_transition if info.HasField("last_transition") else None
    limit = info.concurrency if info.HasField("concurrency") else None
    budget = info.retry_budget if info.HasField("retry_budget") else None
    return {
        "name": info.name,
        "upstream": info.upstream,
        "state": state(info.state),
        "mode": events_pb2.BreakerMode.Name(info.mode).removeprefix("BREAKER_MODE_").lower(),
        "window": {
            "calls": window.calls,
            "failures": window.failures,
            "slow_calls": window.slow_calls,
            "failure_rate": window.failure_rate,
            "slow_call_rate": window.slow_call_rate,
            "consecutive_failures": window.consecutive_failures,
        },
        "open_until": when(info.open_until) if info.HasField("open_until") else None,
        "trip_streak": info.trip_streak,
        "streak_decay_in_ms": info.streak_decay_in_ms,
        "half_open_in_flight": info.half_open_in_flight,
        "open_duration_ms": info.open_duration_ms,
        "concurrency": None if limit is None else {
            "in_flight": limit.in_flight,
            "max_concurrent_requests": limit.max_concurrent_requests,
            "overflows": limit.overflows,
            "algorithm": limit.algorithm or "fixed",
            "limit": limit.limit or limit.max_concurrent_requests,
            "shed": limit.shed,
            "shedding": limit.shedding,
        },
        "retry_budget": None if budget is None else {
            "ratio": budget.ratio,
            "min_per_s": budget.min_per_s,
            "available": budget.available,
            "retries": budget.retries,
            "hedges": budget.hedges,
            "exhausted": budget.exhausted,
        },
        "last_transition": None if last is None else {
            "from_state": state(last.from_state),
            "to_state": state(last.to_state),
            "reason": last.reason,
            "at": when(last.at),
        },
    }


def _shed(limit: dict[str, Any] | None) -> str:
    if limit is None or limit["algorithm"] == "fixed":
        return "-"
    return f"{limit['algorithm']}:{limit['shed']}{'*' if limit['shedding'] else ''}"


def _duration(ms: int) -> str:
    """``12.3s`` for a positive number of milliseconds, ``-`` for 0."""
    return f"{ms / 1000:.1f}s" if ms > 0 else "-"


def format_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width text table of :func:`breaker_dict` rows. ``IN_FLIGHT`` is the upstream's
    calls in flight over the limit in force (the adaptive limit with ``adaptive_concurrency``,
    else ``max_concurrent_requests``), ``OVERFLOWS`` the calls ``max_concurrent_requests``
    refused since start, ``SHED`` the calls the adaptive limit shed (``algorithm:shed``, a ``*``
    while shedding), ``RETRY_BUDGET`` the retries the budget would grant now / retries and
    hedges granted / refused (all upstream-wide; ``-`` when unknown or not configured).
    ``STREAK_DECAY_IN`` is the time until the trip streak falls by one if the breaker stays
    CLOSED (``-`` when it cannot fall: streak 0, not CLOSED, or disabled)."""
    header = ("BREAKER", "STATE", "MODE", "CALLS", "FAIL%", "SLOW%", "STREAK", "IN_FLIGHT",
              "OVERFLOWS", "SHED", "RETRY_BUDGET", "STREAK_DECAY_IN", "OPEN_UNTIL",
              "LAST TRANSITION")
    lines = [header]
    for row in rows:
        window = row["window"]
        last = row["last_transition"]
        limit = row.get("concurrency")
        budget = row.get("retry_budget")
        lines.append((
            row["name"], row["state"], row["mode"], str(window["calls"]),
            f"{window['failure_rate'] * 100:.0f}", f"{window['slow_call_rate'] * 100:.0f}",
            str(row["trip_streak"]),
            "-" if limit is None else f"{limit['in_flight']}/{limit['limit']}",
            "-" if limit is None else str(limit["overflows"]),
            _shed(limit),
            "-" if budget is None else (f"{budget['available']:.0f}/"
                                        f"{budget['retries'] + budget['hedges']}/"
                                        f"{budget['exhausted']}"),
            _duration(row.get("streak_decay_in_ms", 0)),
            row["open_until"] or "-",
            "-" if last is None else
            f"{last['from_state']}->{last['to_state']} ({last['reason']}) {last['at']}",
        ))
    return render_table(header, lines[1:], "no breakers")
