"""Value types of the balancer: the records listeners hear, the admin view, the listener base.

Everything here is immutable (frozen, slotted dataclasses) except :class:`EndpointListener`,
which users subclass. The records may be kept and handed to other threads freely.
"""

from __future__ import annotations

from dataclasses import dataclass

CONSECUTIVE_FAILURES = "consecutive_failures"
FAILURE_RATE = "failure_rate"


@dataclass(frozen=True, slots=True)
class Ejection:
    """One endpoint was ejected: it gets no new calls for ``ejection_s``.

    ``reason`` is ``consecutive_failures`` or ``failure_rate``. ``consecutive_failures``,
    ``failure_rate`` and ``calls`` are the numbers the decision was based on (the rate and the
    calls of the endpoint's current interval). ``ejections_in_a_row`` is the count after this
    ejection (it sets the ejection time). ``at_wall`` is unix seconds.
    """

    upstream: str
    endpoint: str
    reason: str
    ejection_s: float
    ejections_in_a_row: int
    consecutive_failures: int
    failure_rate: float
    calls: int
    at_wall: float


@dataclass(frozen=True, slots=True)
class Return:
    """An ejected endpoint is back in service (its time was up, or the set shrank so far that
    it had to come back early to keep the ejection limit). ``ejected_for_s`` is how long it was
    out."""

    upstream: str
    endpoint: str
    ejected_for_s: float
    at_wall: float


@dataclass(frozen=True, slots=True)
class EndpointsChange:
    """The endpoint set changed. ``added`` and ``removed`` are sorted addresses, ``count`` the
    size of the new set; ``source`` is what the caller said the set came from (``address``,
    ``endpoints``, ``dns``, ``file``)."""

    upstream: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    count: int
    source: str
    at_wall: float


@dataclass(frozen=True, slots=True)
class EndpointView:
    """A read of one endpoint for admin APIs, dashboards and tests.

    ``ewma_ms`` is the latency estimate as a pick would read it now (decayed for the time since
    the last call). ``ejected_until_wall`` is the unix time an ejection ends (None when not
    ejected). ``ejections_in_a_row`` already includes the decay earned by time in service.
    ``calls`` and ``failures`` count finished calls since the endpoint joined the set.
    """

    address: str
    ejected: bool
    ewma_ms: float
    in_flight: int
    ejected_until_wall: float | None
    ejections_in_a_row: int
    calls: int
    failures: int


class EndpointListener:
    """Receives a balancer's ejections, returns and set changes. Subclass and override.

    Threading rules: methods are called synchronously, in the asyncio task (or thread) whose
    call to the balancer caused the event: an ejection in the ``finish()`` of the call that
    tipped it, a return in the ``pick()`` (or read) that noticed it, a set change in
    ``update_endpoints()``. So a tracing listener sees the causing call's contextvars (its
    current span). They run on the data path: they must not block (no I/O, no waiting); hand
    work to a queue instead. They may read the balancer (``views()``) but must not change it.
    An exception raised by a listener is logged on ``sidecar.balancer`` and swallowed:
    observability must never fail a call.

    Example::

        class PrintEjections(EndpointListener):
            def on_ejected(self, ejection: Ejection) -> None:
                print(f"{ejection.endpoint} out for {ejection.ejection_s:g}s ({ejection.reason})")

        balancer.add_listener(PrintEjections())
    """

    def on_ejected(self, ejection: Ejection) -> None:
        """Called after an endpoint is ejected."""

    def on_returned(self, returned: Return) -> None:
        """Called after an ejected endpoint is back in service."""

    def on_endpoints_changed(self, change: EndpointsChange) -> None:
        """Called after the endpoint set changed (and once for the first set, even empty)."""
