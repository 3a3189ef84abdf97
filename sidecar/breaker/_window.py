"""Sliding windows: the last N calls, or the last N seconds in buckets, O(1) per recorded call.

Both keep running sums (calls, failures, slow calls, the current failure run) so recording and
reading never walk the window. The time window advances lazily: only when touched, and by at
most ``buckets`` bucket clears however long it sat idle.

Threading: windows are not thread-safe on their own. The breaker owns one and touches it only
under its lock; anyone else using a window directly must do the same.

The breaker's hot path reads the public counters (``calls``, ``failures``, ``slow_calls``,
``run``) straight after :meth:`record` instead of building a snapshot, which would allocate.
Those counters are current as of the last ``record``/``snapshot``/``windows_completed`` call.
``aged_out`` tells the breaker that calls left by age, which can raise a rate without any
new failure, so its trip rules must be asked again (see ``sidecar.breaker._rules``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from sidecar.breaker._settings import BreakerSettings
from sidecar.breaker._types import WindowSnapshot

_FAILED = 1
_SLOW = 2


def make_snapshot(calls: int, failures: int, slow_calls: int, run: int) -> WindowSnapshot:
    """Build a snapshot from running sums (rates are 0.0 for an empty window)."""
    if calls == 0:
        return WindowSnapshot(0, 0, 0, 0.0, 0.0, 0)
    return WindowSnapshot(
        calls=calls,
        failures=failures,
        slow_calls=slow_calls,
        failure_rate=failures / calls,
        slow_call_rate=slow_calls / calls,
        consecutive_failures=min(run, calls),
    )


class SlidingWindow(Protocol):
    """What the breaker needs from a window. The adaptive policy reads only these numbers.

    ``run`` is the number of failures in a row ending at the latest call, since the last reset;
    it may exceed ``calls`` once old calls left the window, so the failures in a row *inside*
    the window are ``min(run, calls)``.
    """

    calls: int
    failures: int
    slow_calls: int
    run: int
    aged_out: bool
    """True once calls have left the window by age (time windows only) since the flag was last
    cleared (by the reader, or by :meth:`reset`). A count window never sets it: there a call
    leaves only to make room for a newer one, which never raises a rate."""

    def record(self, failed: bool, slow: bool) -> None:
        """Add one call's outcome, evicting what fell out of the window. O(1)."""
        ...

    def snapshot(self) -> WindowSnapshot:
        """The window's counts and rates now."""
        ...

    def reset(self) -> None:
        """Forget every call (and restart :meth:`windows_completed` from 0)."""
        ...

    def windows_completed(self) -> int:
        """Whole windows' worth of calls (count) or of time (time) since the last reset.

        The breaker itself does not use it: its trip streak decays with time spent CLOSED
        (``BreakerSettings.streak_decay_ms``), never with call counts.
        """
        ...


class CountWindow:
    """The last ``size`` calls, in a ring of outcome codes.

    Example::

        window = CountWindow(20)
        window.record(failed=True, slow=False)
        window.snapshot().failure_rate   # 1.0
    """

    __slots__ = (
        "_next",
        "_ring",
        "aged_out",
        "calls",
        "failures",
        "laps",
        "run",
        "size",
        "slow_calls",
    )

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"size: must be >= 1, got {size}")
        self.size = size
        self.calls = 0
        self.failures = 0
        self.slow_calls = 0
        self.run = 0
        self.laps = 0
        self._next = 0
        self.aged_out = False
        # Empty slots hold 0 (a success), so evicting one subtracts nothing: no "is full" branch.
        self._ring = [0] * size

    def record(self, failed: bool, slow: bool) -> None:
        i = self._next
        ring = self._ring
        old = ring[i]
        if old:
            if old & _FAILED:
                self.failures -= 1
            if old & _SLOW:
                self.slow_calls -= 1
        code = 0
        if failed:
            code = _FAILED
            self.failures += 1
            self.run += 1
        else:
            self.run = 0
        if slow:
            code |= _SLOW
            self.slow_calls += 1
        ring[i] = code
        i += 1
        if i == self.size:
            i = 0
            self.laps += 1
        self._next = i
        if self.calls < self.size:
            self.calls += 1

    def snapshot(self) -> WindowSnapshot:
        return make_snapshot(self.calls, self.failures, self.slow_calls, self.run)

    def reset(self) -> None:
        self.calls = self.failures = self.slow_calls = self.run = self.laps = self._next = 0
        self._ring = [0] * self.size
        self.aged_out = False

    def windows_completed(self) -> int:
        return self.laps


class TimeWindow:
    """The calls of the last ``seconds``, kept in ``buckets`` buckets of equal width.

    A call at time ``t`` falls in bucket ``floor(t / width)`` (``width = seconds / buckets``).
    At time ``now`` the window holds the current bucket and the ``buckets - 1`` before it, so a
    call leaves the window between ``seconds - width`` and ``seconds`` after it was made.
    Times come from the injected ``clock`` (monotonic seconds; a clock that steps back is
    treated as standing still).

    Example::

        window = TimeWindow(10.0, 10, clock=time.monotonic)
        window.record(failed=False, slow=True)
        window.snapshot().slow_call_rate   # 1.0
    """

    __slots__ = (
        "_bucket_calls",
        "_bucket_failures",
        "_bucket_slow",
        "_clock",
        "_head",
        "_index",
        "_n",
        "_reset_epoch",
        "_width",
        "aged_out",
        "calls",
        "failures",
        "run",
        "seconds",
        "slow_calls",
    )

    def __init__(self, seconds: float, buckets: int, clock: Callable[[], float]) -> None:
        if not seconds > 0:
            raise ValueError(f"seconds: must be > 0, got {seconds}")
        if buckets < 1:
            raise ValueError(f"buckets: must be >= 1, got {buckets}")
        self.seconds = seconds
        self._n = buckets
        self._width = seconds / buckets
        self._clock = clock
        self.reset()

    def _epoch(self, now: float) -> int:
        return int(now // self._width)

    def reset(self) -> None:
        n = self._n
        self._bucket_calls = [0] * n
        self._bucket_failures = [0] * n
        self._bucket_slow = [0] * n
        self.calls = self.failures = self.slow_calls = self.run = 0
        self.aged_out = False
        self._head = self._reset_epoch = self._epoch(self._clock())
        self._index = self._head % n

    def _advance(self) -> None:
        self._advance_to(self._clock())

    def _advance_to(self, now: float) -> None:
        """Move the head bucket to ``now``, clearing the buckets that fell out of the window.

        At most ``buckets`` bucket clears, however long the window sat idle.
        """
        epoch = self._epoch(now)
        head = self._head
        if epoch <= head:
            return
        n = self._n
        if epoch - head >= n:  # idle for a whole window or more: everything left
            for lst in (self._bucket_calls, self._bucket_failures, self._bucket_slow):
                lst[:] = [0] * n
            if self.calls:
                self.aged_out = True
            self.calls = self.failures = self.slow_calls = 0
        else:
            bc, bf, bs = self._bucket_calls, self._bucket_failures, self._bucket_slow
            for e in range(head + 1, epoch + 1):
                i = e % n
                if bc[i]:
                    self.calls -= bc[i]
                    self.failures -= bf[i]
                    self.slow_calls -= bs[i]
                    bc[i] = bf[i] = bs[i] = 0
                    self.aged_out = True
        self._head = epoch
        self._index = epoch % n

    def record(self, failed: bool, slow: bool) -> None:
        now = self._clock()
        if now // self._width > self._head:  # crossed into a new bucket: roll (rare)
            self._advance_to(now)
        i = self._index
        self._bucket_calls[i] += 1
        self.calls += 1
        if failed:
            self._bucket_failures[i] += 1
            self.failures += 1
            self.run += 1
        else:
            self.run = 0
        if slow:
            self._bucket_slow[i] += 1
            self.slow_calls += 1

    def snapshot(self) -> WindowSnapshot:
        self._advance()
        return make_snapshot(self.calls, self.failures, self.slow_calls, self.run)

    def windows_completed(self) -> int:
        self._advance()
        return (self._head - self._reset_epoch) // self._n


def make_window(settings: BreakerSettings, clock: Callable[[], float]) -> SlidingWindow:
    """The window ``settings`` asks for."""
    if settings.window_type == "count":
        return CountWindow(settings.window_size)
    return TimeWindow(settings.window_seconds, settings.window_buckets, clock)
