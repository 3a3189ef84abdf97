"""When to give up on a gRPC channel that stopped answering and open a new one.

A deadline does not close a connection, and gRPC never notices a connection that a partition
(or a NAT entry dropped while idle) swallowed unless keepalive pings run: calls keep going into
it until the kernel gives up (~15 min). Both the proxy's endpoint connections
(:mod:`sidecar.proxy.upstream`) and the event shipper's exporter (:mod:`sidecar.events.exporter`)
therefore count calls in a row that got no answer in time, and open a new channel after a few
(docs/reliability.md). :class:`TimeoutStreak` is that count, shared so both follow one rule.

Threading: not locked; each streak belongs to one event loop (the proxy) or one thread (the
shipper).
"""

from __future__ import annotations

__all__ = ["TimeoutStreak"]


class TimeoutStreak:
    """Counts calls in a row that timed out (DEADLINE_EXCEEDED with no answer of any kind);
    :meth:`timed_out` says when the channel should be reopened.

    Any answer breaks the streak, and so does a new channel: :meth:`reset`, or on a hot path
    the plain attribute store ``streak.count = 0`` (the same thing, without a Python call per
    call).

    Example::

        streak = TimeoutStreak(3)
        streak.timed_out()   # False
        streak.reset()       # an answer: the connection is alive, start over
        if streak.timed_out() or probe:
            reopen()
    """

    __slots__ = ("count", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self.count = 0
        """Calls in a row that timed out since the last answer."""

    def timed_out(self) -> bool:
        """One more call got no answer in time; True: that makes ``limit`` in a row, reopen."""
        self.count += 1
        return self.count >= self.limit

    def reset(self) -> None:
        """A call got an answer (any status but a timeout), or the channel was replaced: the
        streak starts over."""
        self.count = 0
