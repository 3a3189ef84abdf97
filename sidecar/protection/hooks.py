"""The plugin port: how a transport reports each call to telemetry (tracing, metrics, events)
without knowing them, and what a plugin hands the proxy (:class:`ProxyPlugin`).

Telemetry and events import this module, never a transport: the proxy and the in-process
interceptors depend on it, not the other way round (see docs/design.md).

The proxy runs every call inside ``with observer.start_call(info) as scope:`` and reports what
happens to the scope. Breaker decisions (``try_acquire``/``record``) happen *inside* that block,
so a :class:`~sidecar.breaker.BreakerListener` called synchronously by the breaker sees the
call's contextvars (e.g. its OpenTelemetry span) and can link a transition to the call.

One scope per call the host app made: when the breaker rejects and a fallback answers, the scope
hears ``rejected`` then ``fallback`` and finally ``finish`` with the status the host app got.

Threading rules: observers are called on the proxy's event loop, in the task of the call, on the
data path. They must be cheap and never block (no I/O, no locks held for long); hand work to a
queue instead. An observer that raises fails only its own bookkeeping: the proxy logs it once per
call and goes on forwarding.

Example::

    class CountingObserver:
        def __init__(self) -> None:
            self.calls = 0

        @contextlib.contextmanager
        def start_call(self, info: CallInfo) -> Iterator[CallScope]:
            self.calls += 1
            yield NOOP_SCOPE

    app = build_app(config, observers=[CountingObserver()])
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol

import grpc

from sidecar.balancer import Balancer, EndpointListener
from sidecar.breaker import BreakerListener
from sidecar.resilience import SheddingListener

if TYPE_CHECKING:
    from sidecar.config import SidecarConfig
    from sidecar.protection.guard import UpstreamGuard

__all__ = [
    "NOOP_OBSERVER",
    "NOOP_SCOPE",
    "CallInfo",
    "CallKind",
    "CallObserver",
    "CallScope",
    "ConfigSource",
    "MetadataItem",
    "ProxyPlugin",
    "WatchedUpstream",
]

CallKind = Literal["unary_unary", "unary_stream", "stream_unary", "stream_stream"]
"""The call shape the proxy forwarded the call as.

The proxy learns shapes from the upstream's server reflection; a method whose shape it does not
know is forwarded as a bidi stream (``stream_stream``), which is correct for every shape because
all four look the same on the wire. So ``stream_stream`` means "bidi, or not known".
"""

MetadataItem = tuple[str, str | bytes]
ConfigSource = Literal["start", "reload"]


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What is known about a call when it starts."""

    upstream: str
    """Upstream name from the config; "" if no route matched (the call gets UNIMPLEMENTED)."""
    method: str
    """Full method path, ``/pkg.Service/Method``."""
    breaker: str
    """Breaker name: the upstream, or ``upstream/pkg.Service/Method`` with ``per_method``."""
    kind: CallKind
    peer: str
    """The host app's peer address (``context.peer()``)."""
    upstream_address: str
    """``HOST:PORT`` the call goes to ("" if unrouted)."""
    metadata: tuple[MetadataItem, ...]
    """Incoming invocation metadata (lower-case keys), before hop-by-hop headers are removed."""


class CallScope(Protocol):
    """Per-call receiver of what the proxy did. All methods are optional to act on."""

    def outgoing_metadata(self, metadata: list[MetadataItem]) -> None:
        """Mutate ``metadata`` in place before it is sent upstream (e.g. add ``traceparent``)."""

    def rejected(self, reason: str, retry_after_ms: int) -> None:
        """The breaker refused the call: ``open``, ``half_open_full`` or ``forced_open``."""

    def fallback(self, kind: str, target: str) -> None:
        """A fallback answers instead: kind ``upstream`` (target: its name) or ``status``."""

    def overflow(self) -> None:
        """The upstream's concurrency limit was reached; the call gets RESOURCE_EXHAUSTED."""

    def endpoint(self, address: str) -> None:
        """The balancer chose the endpoint ``address`` (``HOST:PORT``) for this call (once per
        attempt; not called when the call never reached an endpoint)."""

    def attempt_started(self, attempt: int, address: str, hedge: bool) -> None:
        """Attempt number ``attempt`` (1 = the first) of a call under a ``retry`` or ``hedging``
        policy went to ``address``; ``hedge``: it is a hedged copy, not a retry or the first.
        Calls under no such policy get no attempt reports (the call is its one attempt)."""

    def attempt_ended(self, attempt: int, code: grpc.StatusCode | None,
                      duration_s: float, outcome: str) -> None:
        """That attempt ended: ``code`` None when it was cancelled (a hedge that lost, or the
        caller left). ``outcome``: ``committed`` (its answer went to the caller),
        ``retried`` (a retry followed), ``lost`` (another hedge won), ``failed`` (its status
        went to the caller, nothing followed)."""

    def retry(self, reason: str, delay_s: float) -> None:
        """A retry will be sent after ``delay_s`` (backoff or pushback). ``reason``: the
        status code name that caused it (``UNAVAILABLE``) or ``per_try_timeout``."""

    def retry_refused(self, reason: str) -> None:
        """A retry or hedge was not sent although the status allowed one. ``reason``:
        ``budget`` (the retry budget is spent), ``pushback`` (the server said stop),
        ``deadline`` (no time left), ``committed`` (a response already reached the caller),
        ``buffer`` (the request was over ``buffer_bytes``), ``attempts`` (max_attempts)."""

    def hedge(self, attempt: int) -> None:
        """A hedged copy, attempt number ``attempt``, is being sent."""

    def shed(self, limit: int, in_flight: int) -> None:
        """The adaptive concurrency limit (``limit``, with ``in_flight`` calls) refused the
        call: it gets RESOURCE_EXHAUSTED with ``x-sidecar-overflow: true``. (``overflow`` is
        the fixed ``max_concurrent_requests`` ceiling.)"""

    def finish(self, code: grpc.StatusCode, duration_s: float) -> None:
        """The final status the host app got, and how long the call took in the proxy."""


class CallObserver(Protocol):
    """Opens a scope for each call; see the module docstring for the rules."""

    def start_call(self, info: CallInfo) -> contextlib.AbstractContextManager[CallScope]:
        """Called once per call before any breaker decision."""
        ...


class _NoopScope:
    """A scope that ignores everything; also its own context manager (no allocation per call)."""

    __slots__ = ()

    def __enter__(self) -> _NoopScope:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    def outgoing_metadata(self, metadata: list[MetadataItem]) -> None:
        pass

    def rejected(self, reason: str, retry_after_ms: int) -> None:
        pass

    def fallback(self, kind: str, target: str) -> None:
        pass

    def overflow(self) -> None:
        pass

    def endpoint(self, address: str) -> None:
        pass

    def attempt_started(self, attempt: int, address: str, hedge: bool) -> None:
        pass

    def attempt_ended(self, attempt: int, code: grpc.StatusCode | None,
                      duration_s: float, outcome: str) -> None:
        pass

    def retry(self, reason: str, delay_s: float) -> None:
        pass

    def retry_refused(self, reason: str) -> None:
        pass

    def hedge(self, attempt: int) -> None:
        pass

    def shed(self, limit: int, in_flight: int) -> None:
        pass

    def finish(self, code: grpc.StatusCode, duration_s: float) -> None:
        pass


NOOP_SCOPE = _NoopScope()


class _NoopObserver:
    __slots__ = ()

    def start_call(self, info: CallInfo) -> _NoopScope:
        return NOOP_SCOPE


NOOP_OBSERVER: CallObserver = _NoopObserver()
"""Observes nothing. The proxy skips building :class:`CallInfo` when this is its observer."""


class WatchedUpstream(Protocol):
    """What a plugin may read from a live upstream (``ProxyPlugin.watch_upstreams``): its
    guard and its balancer, as plain attributes. The proxy's ``Upstream`` is one; a plugin
    needs no more of it, so it never imports the proxy."""

    @property
    def guard(self) -> UpstreamGuard: ...

    @property
    def balancer(self) -> Balancer[Any]: ...


@dataclass(frozen=True)
class ProxyPlugin:
    """What a concern (telemetry, events) adds to a running proxy, assembled by
    :func:`sidecar.proxy.app.build_app`.

    ``start`` runs before the proxy serves, ``stop`` after it has drained (both on the event
    loop; they may await, e.g. to flush exporters). ``config_applied`` is called on the loop with
    the config in force, once at start (``"start"``) and after each accepted reload
    (``"reload"``); it must not block. ``watch_upstreams`` is called once, when the plugin is
    added, with a function returning the proxy's live upstreams by name: each call returns the
    current routing generation's mapping, which is never mutated (a reload swaps in a new one),
    so a scrape thread may call it; what it reads from an upstream must be a plain attribute
    (e.g. ``upstream.balancer.ejections_refused``): balancers belong to the event loop.
    """

    name: str
    observers: Sequence[CallObserver] = ()
    breaker_listeners: Sequence[BreakerListener] = ()
    endpoint_listeners: Sequence[EndpointListener] = ()
    shedding_listeners: Sequence[SheddingListener] = ()
    start: Callable[[], Awaitable[None]] | None = None
    stop: Callable[[], Awaitable[None]] | None = None
    config_applied: Callable[[SidecarConfig, ConfigSource], None] | None = field(default=None)
    watch_upstreams: Callable[[Callable[[], Mapping[str, WatchedUpstream]]], None] | None = None
