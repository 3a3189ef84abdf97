"""Spans of a call's attempts and span events of its retries, hedges and shedding.

Each attempt of a call under a retry or hedging policy is a child span ``sidecar.attempt`` of
the call's span (attributes: ``sidecar.attempt`` number, ``sidecar.attempt.hedge``,
``server.address``/``server.port`` of the endpoint, ``rpc.grpc.status_code`` when it got a
status, ``sidecar.attempt.outcome``: committed, retried, lost or failed). On the call's span:
``sidecar.retry`` (``sidecar.retry.reason``, ``sidecar.retry.delay_ms``),
``sidecar.retry_refused`` (``sidecar.retry.refused``: budget, pushback, deadline, committed,
buffer, attempts), ``sidecar.hedge`` (``sidecar.hedge.attempt``) and ``sidecar.shed``
(``sidecar.limit``, ``sidecar.in_flight``).

Called on the proxy's event loop through :class:`~sidecar.telemetry.tracing._TracingScope`;
nothing is recorded for a call whose span is not sampled.
"""

from __future__ import annotations

from typing import Final

import grpc
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

__all__ = ["ATTEMPT_SPAN", "end_attempt", "retry_event", "retry_refused_event", "shed_event",
           "start_attempt"]

ATTEMPT_SPAN: Final = "sidecar.attempt"


def _split(address: str) -> tuple[str, int | None]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return address, None
    return host.strip("[]"), int(port)


def start_attempt(tracer: Tracer, parent: Context, attempt: int, address: str,
                  hedge: bool) -> Span:
    host, port = _split(address)
    attributes: dict[str, str | int | bool] = {
        "sidecar.attempt": attempt, "sidecar.attempt.hedge": hedge, "server.address": host,
    }
    if port is not None:
        attributes["server.port"] = port
    return tracer.start_span(ATTEMPT_SPAN, context=parent, kind=SpanKind.CLIENT,
                             attributes=attributes)


def end_attempt(span: Span, code: grpc.StatusCode | None, outcome: str) -> None:
    span.set_attribute("sidecar.attempt.outcome", outcome)
    if code is not None:
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, code.name))
    span.end()


def retry_event(span: Span, reason: str, delay_s: float) -> None:
    span.add_event("sidecar.retry", {"sidecar.retry.reason": reason,
                                     "sidecar.retry.delay_ms": round(delay_s * 1000, 3)})


def retry_refused_event(span: Span, reason: str) -> None:
    span.add_event("sidecar.retry_refused", {"sidecar.retry.refused": reason})


def shed_event(span: Span, limit: int, in_flight: int) -> None:
    span.add_event("sidecar.shed", {"sidecar.limit": limit, "sidecar.in_flight": in_flight})
