"""Starting a call's span cheaply: the data path's share of tracing, paid on every call.

Most calls are not sampled (``sample_ratio`` 1% is typical) and most arrive without a trace
context, yet each still needs a span: its ids go upstream in ``traceparent``, breaker spans
link to it, logs carry them. The SDK's ``Tracer.start_span`` gets there through a parent lookup
in the context, the sampler chain (``SidecarSampler`` -> ``ParentBased`` ->
``TraceIdRatioBased``, each building a result object) and a span context built twice over;
most of a call's tracing cost.

:class:`RootSpans` does the same for a root call span in a few operations: it draws the trace
id as the SDK's ``RandomIdGenerator`` does, takes the sampling decision the sampler would take
for it (``trace_id & (2**64 - 1) < bound``), and, when the call is not sampled, builds the very
``NonRecordingSpan`` the SDK would (same ids drawn the same way, same trace flags, default
trace state). A sampled call goes to the SDK as before, which draws its trace id from
:class:`CallIds` told the id the decision was taken on, so the sampled share is exactly the
ratio and every recorded span is the SDK's own. A call with a parent (the host's trace
headers), a tracer the fast path does not know (another SDK set-up, a disabled tracer) or
SDK self-metrics on all take the SDK path unchanged.

Also here (so ``tracing`` stays under its size budget): the per-route span name and attributes.

Threading: :class:`CallIds` keeps the told id per thread, so a span started on another thread
in between (a breaker transition in library mode) never takes it.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Tracer
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.span import DEFAULT_TRACE_STATE
from opentelemetry.util.types import AttributeValue

from sidecar.telemetry._names import UNROUTED

if TYPE_CHECKING:
    from sidecar.protection import CallInfo

__all__ = ["SPAN_KEY", "CallIds", "CallStatics", "RootSpans", "call_statics", "split_host_port",
           "traceparent"]

SPAN_KEY: Final = next(iter(trace.set_span_in_context(trace.INVALID_SPAN, Context())))
"""The context key the API keeps the current span under (read once, not imported private)."""
_TRACE_ID_LIMIT: Final = (1 << 64) - 1  # TraceIdRatioBased decides on the low 64 bits
_UNSAMPLED: Final = TraceFlags(TraceFlags.DEFAULT | getattr(TraceFlags, "RANDOM_TRACE_ID", 0))
"""The flags the SDK gives an unsampled root span with random ids (01 added when sampled)."""
_getrandbits: Final = random.getrandbits  # the SDK's RandomIdGenerator draws from this one
_new_tuple: Final = tuple.__new__
_LAYOUT_KNOWN: Final = tuple(SpanContext(1, 2, True, _UNSAMPLED)) == (
    1, 2, True, _UNSAMPLED, DEFAULT_TRACE_STATE, True)
"""A ``SpanContext`` is the tuple ``(trace_id, span_id, is_remote, trace_flags, trace_state,
is_valid)``: read and built as one (a property per field, and ``__new__``'s checks, cost more
than the rest of an unsampled span). Checked here, once; otherwise the public API is used."""


def traceparent(span_context: SpanContext) -> str | None:
    """The W3C ``traceparent`` header of ``span_context``; None when it is not valid."""
    if _LAYOUT_KNOWN:
        trace_id, span_id, _, flags, _, valid = span_context
    else:  # pragma: no cover - another opentelemetry-api's layout
        trace_id, span_id = span_context.trace_id, span_context.span_id
        flags, valid = span_context.trace_flags, span_context.is_valid
    # %-formatting: twice as fast as an f-string with format specs here (~0.3 µs a call)
    return "00-%032x-%016x-%02x" % (trace_id, span_id, flags) if valid else None  # noqa: UP031


class CallIds(RandomIdGenerator):
    """The SDK's random ids, except that the next trace id drawn on a thread can be told."""

    def __init__(self) -> None:
        self._told = threading.local()

    def tell(self, trace_id: int) -> None:
        """The next :meth:`generate_trace_id` on this thread returns ``trace_id``."""
        self._told.trace_id = trace_id

    def generate_trace_id(self) -> int:
        told: int = getattr(self._told, "trace_id", 0)
        if told:
            self._told.trace_id = 0
            return told
        return super().generate_trace_id()


class _Bounded(Protocol):
    @property
    def bound(self) -> int:
        """``TraceIdRatioBased``'s bound for the ratio in force."""


class RootSpans:
    """Call spans without a parent, for a tracer whose sampler is ``sampler`` (a
    ``SidecarSampler``: its ``bound`` is the ratio's, read per call so a reload applies)."""

    __slots__ = ("_ids", "_sampler", "_tracer")

    def __init__(self, tracer: Tracer, ids: CallIds, sampler: _Bounded) -> None:
        self._tracer = tracer
        self._ids = ids
        self._sampler = sampler

    @classmethod
    def for_tracer(cls, tracer: trace.Tracer, sampler_type: type) -> RootSpans | None:
        """The fast path for ``tracer``, or None when it is not the set-up this module knows:
        an SDK tracer with :class:`CallIds`, a ``sampler_type`` sampler and no SDK
        self-metrics (``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED``), which count spans."""
        if not isinstance(tracer, Tracer):
            return None
        ids, sampler = tracer.id_generator, tracer.sampler
        metrics = getattr(tracer, "_tracer_metrics", None)
        if not isinstance(ids, CallIds) or not isinstance(sampler, sampler_type) or (
                metrics is not None and type(metrics).__name__ != "NoOpTracerMetrics"):
            return None
        return cls(tracer, ids, sampler)  # type: ignore[arg-type]

    def start(self, name: str, attributes: Mapping[str, AttributeValue]) -> Span:
        """The span of a call with no parent: what ``start_span(name, Context(), CLIENT,
        attributes)`` returns, built here when the call is not sampled."""
        tracer = self._tracer
        trace_id = _getrandbits(128)
        while not trace_id:
            trace_id = _getrandbits(128)
        enabled = tracer._is_enabled()
        if not enabled or trace_id & _TRACE_ID_LIMIT < self._sampler.bound:
            if enabled:  # a disabled tracer draws no id: nothing may be left told
                self._ids.tell(trace_id)
            return tracer.start_span(name, context=_ROOT, kind=SpanKind.CLIENT,
                                     attributes=attributes)
        span_id = _getrandbits(64)
        while not span_id:
            span_id = _getrandbits(64)
        if _LAYOUT_KNOWN:  # both ids are > 0 and in range: valid
            return NonRecordingSpan(_new_tuple(SpanContext, (
                trace_id, span_id, False, _UNSAMPLED, DEFAULT_TRACE_STATE, True)))
        return NonRecordingSpan(SpanContext(trace_id, span_id, False, _UNSAMPLED))


_ROOT: Final = Context()


# --- per-route span name and attributes ------------------------------------------------------


def split_host_port(address: str) -> tuple[str, int | None]:
    """``"127.0.0.1:50051"`` / ``"[::1]:50051"`` -> (host, port); no port -> (address, None)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return address, None
    return host.strip("[]"), int(port)


def _peer_attributes(peer: str) -> dict[str, AttributeValue]:
    """gRPC peer strings (``ipv4:127.0.0.1:5555``, ``ipv6:[::1]:5555``, ``unix:/path``)."""
    scheme, sep, rest = peer.partition(":")
    if not sep:
        return {"client.address": peer} if peer else {}
    if scheme == "unix":
        return {"client.address": rest, "network.transport": "unix"}
    host, port = split_host_port(rest)
    attributes: dict[str, AttributeValue] = {"client.address": host}
    if port is not None:
        attributes["client.port"] = port
    return attributes


@dataclass(frozen=True, slots=True)
class CallStatics:
    """Span name and attributes that depend only on the route: computed once, reused."""

    name: str
    attributes: Mapping[str, AttributeValue]
    by_ratio: bool = True
    """The sampler decides on the ratio for this name (it is not one of the always-sampled)."""


def call_statics(info: CallInfo, always_sampled: frozenset[str] = frozenset()) -> CallStatics:
    """The span name and attributes of calls with this route and peer. Kept to the useful
    minimum: every attribute costs a validation on each recorded span."""
    path = info.method.lstrip("/")
    service, _, method = path.rpartition("/")
    host, port = split_host_port(info.upstream_address)
    attributes: dict[str, AttributeValue] = {
        "rpc.system": "grpc",
        "rpc.service": service,
        "rpc.method": method,
        "sidecar.upstream": info.upstream or UNROUTED,
    }
    if info.breaker and info.breaker != info.upstream:  # per-method breakers
        attributes["sidecar.breaker"] = info.breaker
    if host:
        attributes["server.address"] = host
    if port is not None:
        attributes["server.port"] = port
    if info.peer:
        attributes.update(_peer_attributes(info.peer))
    name = path or info.method
    return CallStatics(name, attributes, name not in always_sampled)
