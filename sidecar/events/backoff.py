"""How long the shipper waits after a failure: exponential backoff with jitter, and the
settings and log lines of the shipper's own breaker.

Both exist so an event log that is down or refusing costs a few calls per minute, not a hot
loop (docs/reliability.md); the shipper (:mod:`sidecar.events.shipper`) decides when to ask.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from dataclasses import dataclass

from sidecar.breaker import BreakerListener, BreakerSettings, State, Transition
from sidecar.events.settings import EventsSettings

__all__ = ["Backoff", "BreakerLog", "breaker_settings"]

_log = logging.getLogger("sidecar.events")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: the n-th failure in a row waits
    ``min(max_s, base_s * multiplier**(n-1)) * (1 - jitter * U[0, 1))``.

    The jitter only shortens a delay, so ``max_s`` is a true cap.

    >>> Backoff(0.2, 10.0, 2.0, 0.0).delay_s(3, random.Random(0))
    0.8
    """

    base_s: float
    max_s: float
    multiplier: float
    jitter: float

    @classmethod
    def from_settings(cls, settings: EventsSettings) -> Backoff:
        return cls(settings.backoff_base_ms / 1000, settings.backoff_max_ms / 1000,
                   settings.backoff_multiplier, settings.backoff_jitter)

    def ceiling_s(self, failures: int) -> float:
        """The delay of the ``failures``-th failure in a row before jitter."""
        if failures < 1:
            return 0.0
        if self.multiplier > 1 and (
                (failures - 1) * math.log(self.multiplier) >= math.log(self.max_s / self.base_s)):
            return self.max_s
        return min(self.max_s, self.base_s * self.multiplier ** (failures - 1))

    def delay_s(self, failures: int, rng: random.Random) -> float:
        """The jittered delay after the ``failures``-th failure in a row (0 for none)."""
        return self.ceiling_s(failures) * (1.0 - self.jitter * rng.random())


def breaker_settings(settings: EventsSettings) -> BreakerSettings:
    """The shipper's breaker never stays open longer than ``backoff_max_ms``: one knob bounds
    how long a recovered log waits for the shipper to notice."""
    cap_ms = settings.backoff_max_ms
    return dataclasses.replace(settings.breaker,
                               open_base_ms=min(settings.breaker.open_base_ms, cap_ms),
                               open_max_ms=min(settings.breaker.open_max_ms, cap_ms))


class BreakerLog(BreakerListener):
    """Logs the shipper's own breaker opening and closing."""

    def on_transition(self, transition: Transition) -> None:
        if transition.to_state is State.OPEN:
            _log.warning("event log unreachable: shipping paused for %.1fs (%s)",
                         transition.open_duration_s, transition.reason,
                         extra={"event": "shipper_breaker", "to_state": "open"})
        elif transition.to_state is State.CLOSED:
            _log.info("event log reachable again: shipping resumed",
                      extra={"event": "shipper_breaker", "to_state": "closed"})
