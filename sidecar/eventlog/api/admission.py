"""Admission control of ``Append``: the event log bounds the Append work it holds at once.

Why. During an incident every sidecar of the mesh trips its breakers in the same second and
ships at once. Without a bound the server queues every request (each up to
``max_message_bytes`` decoded in memory) in front of a store that commits them one group at a
time: memory grows with the number of sidecars, every request waits behind all the others, the
shippers' deadlines expire while their work is still queued, and their retries add the same
work again. With a bound, the requests beyond it are answered RESOURCE_EXHAUSTED at once (they
cost a decode and an answer, nothing is stored) and the shippers come back later, when told.

The retry hint. A refusal carries ``grpc-retry-pushback-ms`` (gRFC A6, the trailer the proxy
parses in :mod:`sidecar.resilience.pushback`): the time the log expects to need for the work in
front of the caller. By Little's law the log serves ``pending / latency`` requests per second
(``latency``: an exponentially weighted mean of how long admitted Appends took), so a backlog of
``pending + refused_recently`` requests drains in ``latency * (pending + refused_recently) /
pending`` seconds. ``refused_recently`` decays with a half-life of ``refused_half_life_s``: it
stands for the refused shippers that will come back. The hint therefore grows with the backlog,
is bounded by ``[min_hint_s, max_hint_s]``, and then gets +-``jitter`` (uniform) so 200
shippers refused in the same millisecond do not come back in the same millisecond.

Pure: a clock and a random generator are injected; no I/O, no asyncio. Not thread-safe: the
server calls it from its event loop only. A request counts from :meth:`AppendAdmission.admit`
to :meth:`AppendAdmission.release`; a call cancelled by its deadline is released then, even if
its store commit is still running (the store's own queue bounds that work).

Example::

    admission = AppendAdmission(max_pending=1000)
    ticket = admission.admit()
    if isinstance(ticket, Refusal):
        ...   # RESOURCE_EXHAUSTED, ticket.message, ticket.trailing_metadata()
    else:
        try: ...   # the store append
        finally: admission.release(ticket)
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from sidecar.resilience.pushback import PUSHBACK_KEY

__all__ = [
    "DEFAULT_JITTER",
    "DEFAULT_MAX_HINT_S",
    "DEFAULT_MIN_HINT_S",
    "DEFAULT_REFUSED_HALF_LIFE_S",
    "REFUSAL_REASONS",
    "Admitted",
    "AppendAdmission",
    "Refusal",
]

DEFAULT_MIN_HINT_S: Final = 0.05
"""Shortest retry hint: a refusal always asks for at least this (no instant retry storm)."""
DEFAULT_MAX_HINT_S: Final = 5.0
"""Longest retry hint before jitter (a shipper caps it at its own ``backoff_max_ms`` anyway)."""
DEFAULT_JITTER: Final = 0.25
"""The hint is multiplied by a uniform factor in ``[1 - jitter, 1 + jitter]``."""
DEFAULT_REFUSED_HALF_LIFE_S: Final = 1.0
"""Half-life of the count of recently refused requests (the demand that will come back)."""
LATENCY_WEIGHT: Final = 0.2
"""Weight of the newest Append's duration in the mean latency (EWMA)."""
REFUSAL_REASONS: Final = ("overloaded",)
"""Label values of ``eventlog_appends_refused_total{reason}`` (each exported from 0)."""


@dataclass(frozen=True, slots=True)
class Admitted:
    """An admitted Append; hand it back to :meth:`AppendAdmission.release` when it ends."""

    started_s: float


@dataclass(frozen=True, slots=True)
class Refusal:
    """An Append refused because ``pending`` requests already hold the limit."""

    pending: int
    max_pending: int
    retry_after_ms: int
    reason: str = "overloaded"

    @property
    def message(self) -> str:
        """The status message: what happened, that nothing was stored, when to come back."""
        return (f"event log overloaded: {self.pending} Append requests being served "
                f"(max_pending_appends {self.max_pending}); nothing was stored, retry in "
                f"{self.retry_after_ms} ms")

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        """The gRFC A6 retry hint as trailing metadata."""
        return ((PUSHBACK_KEY, str(self.retry_after_ms)),)


class AppendAdmission:
    """Admits at most ``max_pending`` Append requests at once; refuses the rest with a hint.

    ``clock`` (monotonic seconds) and ``rng`` are injectable for tests.
    """

    def __init__(self, max_pending: int, *, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None, min_hint_s: float = DEFAULT_MIN_HINT_S,
                 max_hint_s: float = DEFAULT_MAX_HINT_S, jitter: float = DEFAULT_JITTER,
                 refused_half_life_s: float = DEFAULT_REFUSED_HALF_LIFE_S) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending_appends: must be >= 1, got {max_pending}")
        if not 0 < min_hint_s <= max_hint_s or not math.isfinite(max_hint_s):
            raise ValueError(f"hint bounds: need 0 < min_hint_s <= max_hint_s, got "
                             f"{min_hint_s}, {max_hint_s}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter: must be >= 0 and < 1, got {jitter}")
        if not refused_half_life_s > 0:
            raise ValueError(f"refused_half_life_s: must be > 0, got {refused_half_life_s}")
        self.max_pending = max_pending
        self._clock = clock
        self._rng = rng or random.Random()
        self._min_hint_s = min_hint_s
        self._max_hint_s = max_hint_s
        self._jitter = jitter
        self._half_life_s = refused_half_life_s
        self.pending = 0
        """Admitted requests not released yet."""
        self.latency_s = min_hint_s
        """Mean duration of an admitted Append (EWMA; starts at ``min_hint_s``)."""
        self._refused_recent = 0.0
        self._refused_at = clock()
        self.refused = 0
        """Requests refused since start."""

    def admit(self) -> Admitted | Refusal:
        """Admit one Append now, or refuse it (nothing to release then)."""
        now = self._clock()
        if self.pending < self.max_pending:
            self.pending += 1
            return Admitted(now)
        self.refused += 1
        self._refused_recent = self.refused_recent(now) + 1.0
        self._refused_at = now
        return Refusal(self.pending, self.max_pending,
                       max(1, round(self.hint_s(now, jittered=True) * 1000)))

    def release(self, admitted: Admitted) -> None:
        """An admitted Append ended (answered, failed or cancelled)."""
        if self.pending < 1:
            raise RuntimeError("release without a matching admit")
        self.pending -= 1
        took_s = max(0.0, self._clock() - admitted.started_s)
        self.latency_s += LATENCY_WEIGHT * (took_s - self.latency_s)

    def refused_recent(self, now: float) -> float:
        """The decayed count of recent refusals at ``now``."""
        elapsed = max(0.0, now - self._refused_at)
        return self._refused_recent * math.pow(0.5, elapsed / self._half_life_s)

    def hint_s(self, now: float, *, jittered: bool = False) -> float:
        """Seconds the backlog needs to drain (bounded; see the module docstring)."""
        backlog = self.pending + self.refused_recent(now)
        drain_s = self.latency_s * backlog / max(self.pending, 1)
        hint = min(self._max_hint_s, max(self._min_hint_s, drain_s))
        if jittered and self._jitter:
            hint *= 1.0 + self._jitter * (2.0 * self._rng.random() - 1.0)
        return hint
