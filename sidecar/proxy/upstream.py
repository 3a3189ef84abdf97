"""An upstream at runtime: its endpoints (each with its own connection), its balancer, its guard,
and the routing generation that leads calls to it (over :mod:`sidecar.protection.routes`).

Ownership, top down::

    Routing        one immutable generation: upstreams by name + RouteTable (a reload swaps it)
    └─ Upstream    guard (breaker, limit), Balancer over its endpoints, ShapeBook, Discovery
       └─ EndpointLink   one endpoint (HOST:PORT): its current Connection, replaced ones draining
          └─ Connection  one grpc.aio channel (one TCP connection) and what its calls showed

Endpoints come from ``address``, ``endpoints`` or ``discovery`` (:mod:`sidecar.proxy.discovery`).
Every change of the set goes through :meth:`Upstream.set_endpoints`: the balancer keeps the
state of endpoints that stay (latency estimate, ejection), added ones get a new connection at
once, removed ones stop getting calls while their calls in flight finish on their connection
(closed with :data:`STALE_CHANNEL_GRACE_S` of grace).

Dead connections: a partition, or a NAT entry dropped while idle, can swallow a connection
without a FIN or RST; grpc keeps sending calls into it until the kernel gives up (~15 min).
Two things end that: keepalive pings (see :func:`upstream_channel_options`), and
:meth:`EndpointLink.replace_stale`, which opens a new connection to that endpoint after
:data:`STALE_AFTER_TIMEOUTS` timeouts in a row (or a timed-out probe), whatever the endpoint's
ping policy.

Threading: the proxy's event loop only (channels are created and closed on it); nothing here
blocks, and the per-call work (:meth:`Upstream.pick`) is O(1).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeAlias

import grpc

from sidecar.balancer import (
    Balancer,
    BalancerSettings,
    Endpoint,
    EndpointListener,
    OutlierSettings,
)
from sidecar.channels import TimeoutStreak
from sidecar.protection import CallKind, RouteTable, UpstreamGuard
from sidecar.protection.routes import MAX_CACHED_METHODS
from sidecar.proxy._shapes import ShapeBook
from sidecar.proxy.discovery import Discovery, EndpointSource
from sidecar.resilience import (
    NO_POLICIES,
    HedgingPolicy,
    ResiliencePolicies,
    RetryBudget,
    RetryPolicy,
)

__all__ = [
    "CHANNEL_OPTIONS",
    "MAX_CACHED_HANDLERS",
    "MAX_MESSAGE_BYTES",
    "RECONNECT_MIN_INTERVAL_S",
    "STALE_AFTER_TIMEOUTS",
    "STALE_CHANNEL_GRACE_S",
    "Connection",
    "EndpointLink",
    "Routing",
    "Upstream",
    "upstream_channel_options",
]

_log = logging.getLogger("sidecar.proxy")

MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
"""Largest message the proxy accepts and sends either way (grpc's default of 4 MiB would make
the proxy refuse calls the endpoints accept)."""
MAX_CACHED_HANDLERS: Final = 4096
"""Distinct method paths whose handler (or multicallable) is remembered (bounded: paths come
from callers)."""

CHANNEL_OPTIONS: Final = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)
STALE_AFTER_TIMEOUTS: Final = 3
"""Calls in a row on one endpoint connection that ended DEADLINE_EXCEEDED (no answer of any
kind in between) after which the proxy opens a new connection to that endpoint. A timed-out
HALF_OPEN probe is enough on its own."""
RECONNECT_MIN_INTERVAL_S: Final = 1.0
"""At most one new connection per endpoint this often (a hung endpoint times out every call:
this bounds the churn to one connect a second, and the breaker's probes make it rarer)."""
STALE_CHANNEL_GRACE_S: Final = 300.0
"""Calls still running on a replaced connection (or on a removed endpoint) may finish (their
deadlines end them) for at most this long; then they are cancelled and the connection closed."""
FIRST_DISCOVERY_TIMEOUT_S: Final = 5.0
"""How long the proxy waits at start (and when an upstream is added on reload) for the first
discovery result before it serves anyway (calls then fail fast until endpoints are known)."""

ChannelOption: TypeAlias = tuple[str, int]


def upstream_channel_options(keepalive_ms: int | None, keepalive_timeout_ms: int,
                             *, own_retries: bool = False) -> tuple[ChannelOption, ...]:
    """The options of an endpoint's channel.

    - A local subchannel pool: every channel (and so every replacement after
      :data:`STALE_AFTER_TIMEOUTS`) has its own TCP connection. With grpc's global pool a new
      channel to the same address would reuse the old, possibly dead, connection.
    - ``keepalive_ms`` (None: off): HTTP/2 pings after that long without reading anything,
      only while calls are in flight (``keepalive_permit_without_calls`` 0), the connection
      dropped when one goes unanswered for ``keepalive_timeout_ms``. This is what ends calls
      (long streams especially) waiting on a connection a partition swallowed.
      ``grpc.http2.ping_timeout_ms`` is set to the same timeout: measured with grpc 1.85, an
      unanswered ping (keepalive or flow-control) drops the connection only after that
      setting (default 60 s), whatever ``grpc.keepalive_timeout_ms`` says.
    - ``own_retries`` (the upstream has a ``retry`` or ``hedging`` policy): grpc's own retry
      machinery is off (``grpc.enable_retries`` 0). The proxy retries itself, and with grpc's
      retries on, grpc drops the ``grpc-previous-rpc-attempts`` the proxy sends upstream.
    """
    options: list[ChannelOption] = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
    if own_retries:
        options.append(("grpc.enable_retries", 0))
    if keepalive_ms is not None:
        options += [
            ("grpc.keepalive_time_ms", keepalive_ms),
            ("grpc.keepalive_timeout_ms", keepalive_timeout_ms),
            ("grpc.http2.ping_timeout_ms", keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", 0),
        ]
    return tuple(options)


class Connection:
    """One channel (one TCP connection) of an :class:`EndpointLink`, and what its calls showed.

    The data path reports each upstream outcome: any answer sets ``streak.count`` to 0 (an
    attribute store, see :class:`~sidecar.channels.TimeoutStreak`), a timeout calls
    :meth:`timed_out`.
    """

    __slots__ = ("_callables", "channel", "owner", "streak")

    def __init__(self, owner: EndpointLink, channel: grpc.aio.Channel) -> None:
        self.owner = owner
        self.channel = channel
        self.streak = TimeoutStreak(STALE_AFTER_TIMEOUTS)
        """Calls in a row on this connection that got no answer in time."""
        self._callables: dict[tuple[str, str], Any] = {}

    def multicallable(self, kind: CallKind, method: str) -> Any:
        """The channel's raw-bytes multicallable for ``method`` forwarded as ``kind``."""
        key = (kind, method)
        found = self._callables.get(key)
        if found is None:
            if len(self._callables) >= MAX_CACHED_HANDLERS:
                self._callables.clear()
            factory = getattr(self.channel, kind)
            found = factory(method)
            self._callables[key] = found
        return found

    def timed_out(self, probe: bool) -> None:
        """A call on this connection got no answer in time; ``probe``: it was a HALF_OPEN
        probe. Enough of them in a row, or one probe, and the endpoint gets a new one."""
        if self.streak.timed_out() or probe:
            self.owner.replace_stale(self)


class EndpointLink:
    """One endpoint of an upstream: the connection new calls use, and replaced ones draining."""

    __slots__ = ("_clock", "_draining", "_options", "_replaced_at", "address", "connection",
                 "reconnects", "upstream")

    def __init__(self, upstream: str, address: str, options: tuple[ChannelOption, ...],
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        self.upstream = upstream
        self.address = address
        self._options = options
        self._clock = clock
        self._replaced_at = -math.inf
        self._draining: dict[asyncio.Task[None], grpc.aio.Channel] = {}
        self.reconnects = 0
        """Connections replaced because they looked dead (since the endpoint joined)."""
        self.connection = Connection(self, self._open())

    def _open(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.address, options=self._options)

    def reconfigure(self, options: tuple[ChannelOption, ...]) -> None:
        """Changed channel options take a new connection."""
        if options != self._options:
            self._options = options
            self._replace("channel settings changed")

    def replace_stale(self, connection: Connection) -> None:
        """Open a new connection if ``connection`` is still the current one and the last
        replacement is at least :data:`RECONNECT_MIN_INTERVAL_S` ago."""
        if connection is not self.connection:
            return  # a call on an already replaced connection
        now = self._clock()
        if now - self._replaced_at < RECONNECT_MIN_INTERVAL_S:
            return
        self._replaced_at = now
        self.reconnects += 1
        self._replace(f"{connection.streak.count} calls in a row got no answer in time")

    def _replace(self, why: str) -> None:
        stale = self.connection
        self.connection = Connection(self, self._open())
        _log.info("upstream %s: %s; opening a new connection to %s", self.upstream, why,
                  self.address, extra={"event": "reconnect", "upstream": self.upstream,
                                       "address": self.address})
        self._drain(stale.channel, STALE_CHANNEL_GRACE_S)

    def _drain(self, channel: grpc.aio.Channel, grace_s: float) -> None:
        task = asyncio.get_running_loop().create_task(channel.close(grace_s))
        self._draining[task] = channel
        task.add_done_callback(self._drained)

    def _drained(self, task: asyncio.Task[None]) -> None:
        self._draining.pop(task, None)

    @property
    def draining(self) -> bool:
        """Some replaced (or retired) connection still has calls finishing."""
        return bool(self._draining)

    def retire(self, grace_s: float = STALE_CHANNEL_GRACE_S) -> None:
        """The endpoint left its upstream: calls in flight finish (for ``grace_s`` at most),
        then the connection closes."""
        self._drain(self.connection.channel, grace_s)

    async def close(self, grace_s: float | None) -> None:
        """Close every connection now: calls in flight get ``grace_s`` (None: cancelled)."""
        channels = [self.connection.channel]
        for task, channel in list(self._draining.items()):
            task.cancel()
            channels.append(channel)
        await asyncio.gather(*(channel.close(grace_s) for channel in channels))


class Upstream:
    """One upstream at runtime: endpoints, balancer, guard, known method shapes, call settings.

    A reload that keeps the upstream's breaker layout keeps this object (and so the breaker
    state, the endpoints' latency estimates and ejections, and the in-flight count) and only
    calls :meth:`reconfigure` (and :meth:`set_endpoints` / :meth:`use_discovery` when its
    endpoints are configured differently).
    """

    __slots__ = ("_clock", "_links", "_options", "_policy_memo", "_retired", "_stopping",
                 "address", "balancer", "budget", "discovery", "guard", "hedges", "name",
                 "policies", "retries", "shapes", "source", "timeout_s")

    def __init__(self, name: str, timeout_s: float, guard: UpstreamGuard,
                 on_shapes_learned: Callable[[], None],
                 options: tuple[ChannelOption, ...] | None = None,
                 *, endpoints: Sequence[str] = (), source: str = "address",
                 balancer: BalancerSettings | None = None,
                 outlier: OutlierSettings | None = None,
                 listeners: Sequence[EndpointListener] = (),
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self.guard = guard
        self.source = source
        self._options = upstream_channel_options(None, 0) if options is None else options
        self._clock = clock
        self._links: dict[str, EndpointLink] = {}
        self.address = ""
        """The endpoints, comma-separated (logs, and the call's ``upstream_address``)."""
        self._retired: list[EndpointLink] = []
        self._stopping: set[asyncio.Task[None]] = set()
        self.balancer: Balancer[EndpointLink] = Balancer(
            name, balancer or BalancerSettings(), outlier or OutlierSettings(),
            clock=clock, wall_clock=wall_clock, listeners=listeners)
        self.discovery: Discovery | None = None
        self.shapes = ShapeBook(name, self._shape_channel, on_shapes_learned)
        self.policies: ResiliencePolicies = NO_POLICIES
        """Which methods are retried or hedged (:meth:`set_policies`)."""
        self.budget: RetryBudget | None = None
        """The retry budget retries and hedges share; None while neither is configured."""
        self.retries = 0
        """Retries the budget granted since start (admin)."""
        self.hedges = 0
        """Hedges the budget granted since start (admin)."""
        self._policy_memo: dict[str, RetryPolicy | HedgingPolicy | None] = {}
        if endpoints:
            self.set_endpoints(endpoints, source)

    # --- endpoints ------------------------------------------------------------------------

    def _shape_channel(self) -> grpc.aio.Channel | None:
        """The channel reflection questions go over: any endpoint's current connection."""
        for link in self._links.values():
            return link.connection.channel
        return None

    def set_endpoints(self, addresses: Sequence[str], source: str | None = None) -> None:
        """Make ``addresses`` the endpoint set (listeners hear an ``EndpointsChanged`` when it
        changed). Kept endpoints keep their connection and balancer state."""
        if source is not None:
            self.source = source
        had_none = not self._links
        targets: dict[str, EndpointLink] = {}
        for address in addresses:
            link = self._links.get(address)
            if link is None:
                link = targets.get(address) or EndpointLink(self.name, address, self._options,
                                                            clock=self._clock)
            targets[address] = link
        _, removed = self.balancer.update_endpoints(targets, self.source)
        self._retired = [link for link in self._retired if link.draining]
        for endpoint in removed:
            link = endpoint.target
            if link.address not in targets:
                link.retire()
                self._retired.append(link)
        self._links = targets
        self.address = ",".join(targets)
        if had_none and targets:
            self.shapes.learn_all()

    def use_discovery(self, source: EndpointSource | None) -> None:
        """Follow ``source`` from now on (None: the endpoints are static). The caller awaits
        :meth:`start_discovery` next."""
        old = self.discovery
        if old is not None:
            self._stopping.add(asyncio.get_running_loop().create_task(old.stop()))
        self.discovery = None
        if source is not None:
            self.source = source.kind
            self.discovery = Discovery(self.name, source, self._discovered)

    def _discovered(self, addresses: tuple[str, ...]) -> None:
        self.set_endpoints(addresses)

    async def start_discovery(self, first_timeout_s: float = FIRST_DISCOVERY_TIMEOUT_S) -> None:
        """With discovery: wait (bounded) for the first result, then refresh in the background."""
        if self.discovery is None:
            return
        await self.discovery.first(first_timeout_s)
        self.discovery.start()

    def pick(self, avoid: Sequence[Endpoint[EndpointLink]] = ()) -> Endpoint[EndpointLink] | None:
        """The endpoint for the next call (O(1)); None when the upstream has no endpoints."""
        return self.balancer.pick(avoid)

    def links(self) -> Mapping[str, EndpointLink]:
        return self._links

    # --- retries and hedging --------------------------------------------------------------

    def set_policies(self, policies: ResiliencePolicies) -> None:
        """Use ``policies`` from now on. The budget (its credit and counters) is kept while its
        settings stay the same, so a reload does not hand out a fresh allowance."""
        if policies.enabled:
            if self.budget is None or policies.budget != self.policies.budget:
                self.budget = policies.budget.new_budget(self._clock)
        else:
            self.budget = None
        self.policies = policies
        self._policy_memo = {}

    def policy_for(self, method: str) -> RetryPolicy | HedgingPolicy | None:
        """The retry or hedging policy of ``method`` (None: one attempt); O(1) after the first
        call of a method."""
        try:
            return self._policy_memo[method]
        except KeyError:
            pass
        found = self.policies.for_method(method) if self.budget is not None else None
        if len(self._policy_memo) >= MAX_CACHED_METHODS:
            self._policy_memo.clear()
        self._policy_memo[method] = found
        return found

    # --- settings and life ----------------------------------------------------------------

    def reconfigure(self, timeout_s: float, options: tuple[ChannelOption, ...],
                    balancer: BalancerSettings | None = None,
                    outlier: OutlierSettings | None = None) -> None:
        """Apply reloaded settings; changed channel options take new connections."""
        self.timeout_s = timeout_s
        if options != self._options:
            self._options = options
            for link in self._links.values():
                link.reconfigure(options)
        if balancer is not None or outlier is not None:
            self.balancer.reconfigure(balancer or self.balancer.settings,
                                      outlier or self.balancer.outlier)

    async def close(self, grace_s: float | None) -> None:
        """Stop discovery and close every connection: calls in flight get ``grace_s``
        (None: cancelled at once)."""
        self.shapes.close()
        if self.discovery is not None:
            await self.discovery.stop()
        links = [*self._links.values(), *self._retired]
        await asyncio.gather(*(link.close(grace_s) for link in links))


class Routing:
    """An immutable routing generation: upstreams by name and the route table over them."""

    __slots__ = ("table", "upstreams")

    def __init__(self, upstreams: dict[str, Upstream], routes: dict[str, Upstream]) -> None:
        self.upstreams = upstreams
        self.table: RouteTable[Upstream] = RouteTable(routes)
