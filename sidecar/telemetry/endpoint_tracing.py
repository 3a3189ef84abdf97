"""Spans of the balancer's records: an endpoint ejected, an endpoint back, a new endpoint set.

:class:`EndpointTracer` is a :class:`~sidecar.balancer.EndpointListener` traced exactly like
breaker transitions (:class:`~sidecar.telemetry.tracing.TransitionTracer`): each record is its
own zero-length root span at the record's wall-clock time, ALWAYS sampled whatever the sampling
of the call, with a link (``sidecar.link: caused_by``) to the span that was current when the
balancer called the listener. The balancer calls listeners synchronously in the task whose call
caused the record (docs/endpoints.md), so:

- ``endpoint.ejected`` is linked to the call whose failure tipped the endpoint over (its
  ``finish()`` runs inside the proxy's call scope);
- ``endpoint.returned`` is linked to the call whose ``pick()`` noticed the ejection time was up
  (none when an admin read noticed it, or when a shrinking set brought it back early);
- ``endpoints.changed`` is linked to nothing at start and on discovery refreshes (no call is
  current there).

When the causing call's span is recording (sampled), it also gets an event with the same name
and attributes.

=========================  ===================================================================
span                       attributes
=========================  ===================================================================
``endpoint.ejected``       ``sidecar.upstream``, ``sidecar.endpoint`` (``HOST:PORT``),
                           ``endpoint.reason`` (``consecutive_failures`` | ``failure_rate``),
                           ``endpoint.ejection_ms``, ``endpoint.ejections_in_a_row``,
                           ``endpoint.consecutive_failures``, ``endpoint.failure_rate``,
                           ``endpoint.calls``
``endpoint.returned``      ``sidecar.upstream``, ``sidecar.endpoint``, ``endpoint.ejected_for_ms``
``endpoints.changed``      ``sidecar.upstream``, ``endpoints.added`` / ``endpoints.removed``
                           (sorted ``HOST:PORT`` lists), ``endpoints.count``, ``endpoints.source``
=========================  ===================================================================

Threading: called on the data path (the proxy's event loop); only starts and ends an in-memory
span (the batch processor enqueues), never blocks.

Example::

    tracing = setup_tracing(config)
    balancer.add_listener(EndpointTracer(tracing.tracer))
"""

from __future__ import annotations

from typing import Final

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from sidecar.balancer import Ejection, EndpointListener, EndpointsChange, Return
from sidecar.telemetry.tracing import (
    ENDPOINT_EJECTED_SPAN,
    ENDPOINT_RETURNED_SPAN,
    ENDPOINTS_CHANGED_SPAN,
    record_caused_span,
)

__all__ = ["MAX_LISTED_ENDPOINTS", "EndpointTracer"]

MAX_LISTED_ENDPOINTS: Final = 256
"""At most this many addresses in ``endpoints.added`` / ``endpoints.removed`` (a DNS answer can
be large; ``endpoints.count`` is always exact, and the domain event carries the full lists)."""


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


class EndpointTracer(EndpointListener):
    """Traces every ejection, return and endpoint-set change (see the module docstring)."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def on_ejected(self, ejection: Ejection) -> None:
        record_caused_span(self._tracer, ENDPOINT_EJECTED_SPAN, {
            "sidecar.upstream": ejection.upstream,
            "sidecar.endpoint": ejection.endpoint,
            "endpoint.reason": ejection.reason,
            "endpoint.ejection_ms": _ms(ejection.ejection_s),
            "endpoint.ejections_in_a_row": ejection.ejections_in_a_row,
            "endpoint.consecutive_failures": ejection.consecutive_failures,
            "endpoint.failure_rate": ejection.failure_rate,
            "endpoint.calls": ejection.calls,
        }, ejection.at_wall)

    def on_returned(self, returned: Return) -> None:
        record_caused_span(self._tracer, ENDPOINT_RETURNED_SPAN, {
            "sidecar.upstream": returned.upstream,
            "sidecar.endpoint": returned.endpoint,
            "endpoint.ejected_for_ms": _ms(returned.ejected_for_s),
        }, returned.at_wall)

    def on_endpoints_changed(self, change: EndpointsChange) -> None:
        attributes: dict[str, AttributeValue] = {
            "sidecar.upstream": change.upstream,
            "endpoints.added": list(change.added[:MAX_LISTED_ENDPOINTS]),
            "endpoints.removed": list(change.removed[:MAX_LISTED_ENDPOINTS]),
            "endpoints.count": change.count,
            "endpoints.source": change.source,
        }
        record_caused_span(self._tracer, ENDPOINTS_CHANGED_SPAN, attributes, change.at_wall)
