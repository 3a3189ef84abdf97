"""The balancer of one upstream: the endpoint set, the per-call choice, outlier ejection."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Generic, TypeVar

from sidecar.balancer._endpoint import Endpoint, by_address, by_return, return_time
from sidecar.balancer._outlier import ejection_limit
from sidecar.balancer._pick import Picker, make_picker
from sidecar.balancer._settings import BalancerSettings, OutlierSettings
from sidecar.balancer._types import (
    Ejection,
    EndpointListener,
    EndpointsChange,
    EndpointView,
    Return,
)

_log = logging.getLogger("sidecar.balancer")

T = TypeVar("T")
_Event = Ejection | Return | EndpointsChange


_LISTENER_METHOD = {
    Ejection: "on_ejected",
    Return: "on_returned",
    EndpointsChange: "on_endpoints_changed",
}


class Balancer(Generic[T]):
    """Spreads one upstream's calls over its endpoints and ejects the sick ones (docs/endpoints.md).

    Usage, around one call::

        balancer = Balancer("payments", BalancerSettings(), OutlierSettings())
        added, removed = balancer.update_endpoints({"10.0.0.1:50051": None}, "endpoints")

        endpoint = balancer.pick()
        if endpoint is None:                      # empty set: fail fast with UNAVAILABLE
            ...
        started = balancer.start(endpoint)
        try:
            reply = await call(endpoint.target)
        except UpstreamFailure:
            balancer.finish(endpoint, started, failed=True)
            raise
        except BaseException:                     # cancelled: no outcome to count
            balancer.cancel(endpoint)
            raise
        balancer.finish(endpoint, started, failed=False)

    Every ``start`` is matched by exactly one ``finish`` or ``cancel``.

    Cost: ``pick``, ``start``, ``finish`` and ``cancel`` are O(1) (``pick`` with a non-empty
    ``avoid``: O(len(avoid))). Active endpoints live in a list with each endpoint's index, so an
    ejection or return moves one entry; returns are noticed lazily, by comparing the clock with
    the earliest return time, and only then is the (small) ejected set scanned.

    Threading: one asyncio event loop owns a balancer. There are no locks and nothing blocks or
    awaits; do not share a balancer across threads. Listeners are called synchronously, in the
    task whose call caused the event, after the balancer's state is consistent (see
    :class:`EndpointListener`). Time comes only from the injected ``clock`` (monotonic seconds)
    and ``wall_clock`` (unix seconds, for records); randomness only from the injected ``rng``.
    """

    __slots__ = (
        "_active",
        "_clock",
        "_ejected",
        "_initialized",
        "_listeners",
        "_members",
        "_next_return",
        "_outlier",
        "_picker",
        "_rng",
        "_settings",
        "_wall_clock",
        "ejections_refused",
        "ejections_total",
        "upstream",
    )

    def __init__(
        self,
        upstream: str,
        settings: BalancerSettings,
        outlier: OutlierSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        listeners: Sequence[EndpointListener] = (),
    ) -> None:
        self.upstream = upstream
        self._settings = settings
        self._outlier = outlier
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng if rng is not None else random.Random()
        self._listeners: tuple[EndpointListener, ...] = tuple(listeners)
        self._picker: Picker = make_picker(settings, self._rng)
        self._members: dict[str, Endpoint[T]] = {}
        self._active: list[Endpoint[T]] = []
        self._ejected: set[Endpoint[T]] = set()
        self._next_return = math.inf  # earliest ejected_until in _ejected (may be stale-early)
        self._initialized = False
        self.ejections_total = 0
        """Ejections that happened."""
        self.ejections_refused = 0
        """Ejections a rule asked for but ``max_ejection_percent`` (or the last active
        endpoint) refused; the endpoint's counts keep going."""

    # --- configuration ----------------------------------------------------------------------

    @property
    def settings(self) -> BalancerSettings:
        return self._settings

    @property
    def outlier(self) -> OutlierSettings:
        return self._outlier

    def add_listener(self, listener: EndpointListener) -> None:
        self._listeners = (*self._listeners, listener)

    def reconfigure(self, settings: BalancerSettings, outlier: OutlierSettings) -> None:
        """Swap settings in (a reload). Every endpoint keeps its estimate, counts and ejection.

        A new ejection time applies from the next ejection. Should the new limits allow fewer
        ejected endpoints than are out now (a lower ``max_ejection_percent``, or ``enabled``
        turned off), the ones due back soonest return at once.
        """
        if settings.policy != self._settings.policy or (
            settings.ewma_decay_ms != self._settings.ewma_decay_ms
        ):
            self._picker = make_picker(settings, self._rng)
        self._settings = settings
        self._outlier = outlier
        events: list[_Event] = []
        self._enforce_limit(self._clock(), events)
        self._emit(events)

    # --- the endpoint set -------------------------------------------------------------------

    def update_endpoints(
        self, targets: Mapping[str, T], source: str
    ) -> tuple[list[Endpoint[T]], list[Endpoint[T]]]:
        """Replace the set with ``targets`` (address -> the caller's target object).

        Addresses already present keep their :class:`Endpoint` (its target, estimate, counts and
        ejection state; the new mapping's value for them is ignored). Returns ``(added,
        removed)`` endpoints, sorted by address, so the caller can open and close connections.
        Removed endpoints are never picked again; their in-flight calls may still finish or be
        cancelled, which only settles their ``in_flight``. Listeners hear
        ``on_endpoints_changed`` when the set actually changed, and once at the first call (the
        first set, even an empty one). When the set shrank so far that too many of the rest are
        ejected, the ones due back soonest return at once (``on_returned``).
        """
        now = self._clock()
        members = self._members
        removed = [members[address] for address in sorted(members.keys() - targets.keys())]
        added: list[Endpoint[T]] = []
        for endpoint in removed:
            del members[endpoint.address]
            endpoint._in_set = False
            if endpoint._slot >= 0:
                self._deactivate(endpoint)
            self._ejected.discard(endpoint)
        for address in sorted(targets.keys() - members.keys()):
            endpoint = Endpoint(address, targets[address], self._settings.default_rtt_ms, now)
            members[address] = endpoint
            self._activate(endpoint)
            added.append(endpoint)
        events: list[_Event] = []
        if added or removed or not self._initialized:
            self._initialized = True
            events.append(
                EndpointsChange(
                    upstream=self.upstream,
                    added=tuple(e.address for e in added),
                    removed=tuple(e.address for e in removed),
                    count=len(members),
                    source=source,
                    at_wall=self._wall_clock(),
                )
            )
        self._enforce_limit(now, events)
        self._emit(events)
        return added, removed

    def endpoints(self) -> list[Endpoint[T]]:
        """The current set, sorted by address."""
        return [self._members[address] for address in sorted(self._members)]

    def views(self) -> list[EndpointView]:
        """A read of every endpoint, sorted by address (for the admin API)."""
        now = self._clock()
        self._check_returns(now)
        wall = self._wall_clock()
        tau_s = self._settings.ewma_decay_ms / 1000.0
        interval_ms = self._outlier.interval_ms
        result = []
        for endpoint in self.endpoints():
            state = endpoint.outlier
            until = state.ejected_until
            result.append(
                EndpointView(
                    address=endpoint.address,
                    ejected=until is not None,
                    ewma_ms=endpoint.load.value(now, tau_s),
                    in_flight=endpoint.in_flight,
                    ejected_until_wall=None if until is None else wall + (until - now),
                    ejections_in_a_row=state.in_a_row_at(now, interval_ms),
                    calls=endpoint.calls,
                    failures=endpoint.failures,
                )
            )
        return result

    def active_count(self) -> int:
        """Endpoints in the set and in service (returns due by now are applied first)."""
        self._check_returns(self._clock())
        return len(self._active)

    def ejected_count(self) -> int:
        """Endpoints in the set and ejected (returns due by now are applied first)."""
        self._check_returns(self._clock())
        return len(self._ejected)

    # --- the data path ----------------------------------------------------------------------

    def pick(self, avoid: Collection[Endpoint[T]] = ()) -> Endpoint[T] | None:
        """The endpoint for the next call; None only when the set is empty. O(1).

        Never an ejected or removed endpoint: ``max_ejection_percent`` keeps at least one
        endpoint active in a non-empty set. Prefers endpoints not in ``avoid`` (a retry prefers
        an endpoint not yet tried) and falls back to an avoided one when all are avoided.
        """
        now = self._clock()
        if now >= self._next_return:
            self._check_returns(now)
        active = self._active
        if not active:
            return None
        if len(active) == 1:
            return active[0]
        return self._picker.pick(active, avoid, now)

    def start(self, endpoint: Endpoint[T]) -> float:
        """A call was sent to ``endpoint``; returns its start time (on the balancer's clock)."""
        endpoint.in_flight += 1
        return self._clock()

    def cancel(self, endpoint: Endpoint[T]) -> None:
        """The caller went away: the call ends without an outcome; nothing else is counted."""
        if endpoint.in_flight > 0:
            endpoint.in_flight -= 1

    def finish(
        self, endpoint: Endpoint[T], started: float, failed: bool, latency_s: float | None = None
    ) -> None:
        """The call ended with an upstream outcome (``failed`` is the caller's classification).

        ``latency_s`` (default: since ``started``) is the latency the estimate learns from; a
        stream reports its time to the first response message, so a long-lived healthy stream
        does not look slow.

        Updates the latency estimate and judges the outlier rules, which may eject the endpoint
        (listeners hear it here, in the caller's context). Outcomes of calls to an ejected
        endpoint are counted in its totals but cannot eject it again; outcomes of a removed
        endpoint only settle its ``in_flight``.
        """
        if endpoint.in_flight > 0:
            endpoint.in_flight -= 1
        if not endpoint._in_set:
            return
        now = self._clock()
        if now >= self._next_return:
            self._check_returns(now)
        endpoint.calls += 1
        if failed:
            endpoint.failures += 1
        latency = now - started if latency_s is None else latency_s
        endpoint.load.observe(
            max(0.0, latency * 1000.0), now, self._settings.ewma_decay_ms / 1000.0
        )
        state = endpoint.outlier
        outlier = self._outlier
        if state.ejected_until is not None or not outlier.enabled:
            return
        reason = state.record(failed, now, outlier)
        if reason is None:
            return
        limit = ejection_limit(len(self._members), outlier.max_ejection_percent)
        if len(self._ejected) + 1 > limit:
            self.ejections_refused += 1
            return
        ejection_s = state.eject(now, outlier)
        self.ejections_total += 1
        self._deactivate(endpoint)
        self._ejected.add(endpoint)
        until = now + ejection_s
        if until < self._next_return:
            self._next_return = until
        self._emit(
            [
                Ejection(
                    upstream=self.upstream,
                    endpoint=endpoint.address,
                    reason=reason,
                    ejection_s=ejection_s,
                    ejections_in_a_row=state.in_a_row,
                    consecutive_failures=state.consecutive,
                    failure_rate=state.interval_rate,
                    calls=state.interval_calls,
                    at_wall=self._wall_clock(),
                )
            ]
        )

    # --- internals --------------------------------------------------------------------------

    def _activate(self, endpoint: Endpoint[T]) -> None:
        endpoint._slot = len(self._active)
        self._active.append(endpoint)

    def _deactivate(self, endpoint: Endpoint[T]) -> None:
        """Take ``endpoint`` out of the active list in O(1): the last entry fills its slot."""
        active = self._active
        slot = endpoint._slot
        last = active.pop()
        if last is not endpoint:
            active[slot] = last
            last._slot = slot
        endpoint._slot = -1

    def _come_back(self, endpoint: Endpoint[T], at: float, now: float) -> Return:
        self._ejected.discard(endpoint)
        out_for = endpoint.outlier.come_back(at)
        endpoint.load.reset(self._settings.default_rtt_ms, now)
        self._activate(endpoint)
        return Return(
            upstream=self.upstream,
            endpoint=endpoint.address,
            ejected_for_s=out_for,
            at_wall=self._wall_clock(),
        )

    def _check_returns(self, now: float) -> None:
        """Return every ejected endpoint whose time is up; O(1) unless one is due."""
        if now >= self._next_return:
            events: list[_Event] = []
            self._collect_returns(now, events)
            self._emit(events)

    def _collect_returns(self, now: float, events: list[_Event]) -> None:
        if now < self._next_return:
            return
        earliest = math.inf
        for endpoint in sorted(self._ejected, key=by_address):
            until = endpoint.outlier.ejected_until
            if until is None or until <= now:  # None cannot happen: ejected means a time
                events.append(self._come_back(endpoint, now if until is None else until, now))
            elif until < earliest:
                earliest = until
        self._next_return = earliest

    def _enforce_limit(self, now: float, events: list[_Event]) -> None:
        """After the set or the settings changed: bring the ejected count back within limits."""
        self._collect_returns(now, events)
        if not self._ejected:
            return
        limit = (
            ejection_limit(len(self._members), self._outlier.max_ejection_percent)
            if self._outlier.enabled
            else 0
        )
        excess = len(self._ejected) - limit
        if excess <= 0:
            return
        soonest = sorted(self._ejected, key=by_return)
        for endpoint in soonest[:excess]:
            events.append(self._come_back(endpoint, now, now))
        self._next_return = min(map(return_time, self._ejected), default=math.inf)

    def _emit(self, events: list[_Event]) -> None:
        for event in events:
            method = _LISTENER_METHOD[type(event)]
            for listener in self._listeners:
                try:
                    getattr(listener, method)(event)
                except Exception:
                    _log.exception(
                        "balancer %s: listener %r failed on %s", self.upstream, listener, method
                    )
