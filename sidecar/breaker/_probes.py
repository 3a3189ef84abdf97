"""HALF_OPEN probing: at most ``half_open_probes`` probes at once, judged by their outcomes.

All healthy -> CLOSED; one failing or slow -> OPEN again. A probe that never reports frees
its slot after ``probe_timeout_ms``, so a lost caller cannot wedge the breaker HALF_OPEN
(docs/breaker.md, "HALF_OPEN"). Not thread-safe on its own: the breaker touches it under
its lock.
"""

from __future__ import annotations

from sidecar.breaker._state import PROBE_FAILED, PROBE_SLOW, PROBES_HEALTHY
from sidecar.breaker._types import Permit, WindowSnapshot
from sidecar.breaker._window import make_snapshot


class Probes:
    """Outstanding probe permits (insertion-ordered, oldest first) and the period's outcomes."""

    __slots__ = ("_outstanding", "done", "failures", "max_probes", "slow", "successes", "timeout_s")

    def __init__(self, max_probes: int, timeout_s: float) -> None:
        self._outstanding: dict[Permit, None] = {}
        self.done = self.failures = self.slow = self.successes = 0
        self.max_probes = max_probes
        self.timeout_s = timeout_s

    @property
    def in_flight(self) -> int:
        return len(self._outstanding)

    def clear(self) -> None:
        """Forget outstanding permits (any state change: their outcomes no longer count)."""
        self._outstanding.clear()

    def start_period(self) -> None:
        """Entering HALF_OPEN: no outcomes yet."""
        self.done = self.failures = self.slow = self.successes = 0

    def reclaim(self, now: float) -> None:
        """Free the slots of probes that never reported. At most ``half_open_probes`` steps."""
        outstanding = self._outstanding
        if outstanding:
            expired = [p for p in outstanding if p.expires_at <= now]
            for p in expired:
                del outstanding[p]

    def admit(self, now: float) -> Permit | None:
        """A probe permit, or None when the period has all the probes it needs."""
        self.reclaim(now)
        # Never more than half_open_probes at once, and never more than are still needed:
        # without timeouts or releases, one HALF_OPEN period admits exactly half_open_probes.
        if self.successes + len(self._outstanding) >= self.max_probes:
            return None
        permit = Permit(probe=True, expires_at=now + self.timeout_s)
        self._outstanding[permit] = None
        return permit

    def discard(self, permit: Permit) -> None:
        """Free a slot without an outcome (the call was cancelled)."""
        self._outstanding.pop(permit, None)

    def take(self, permit: Permit) -> bool:
        """Remove an outstanding permit; False when it is not one (reclaimed, released, or
        from an earlier period): its outcome describes a past already judged."""
        if permit not in self._outstanding:
            return False
        del self._outstanding[permit]
        return True

    def judge(self, failed: bool, slow: bool) -> str | None:
        """Count a taken probe's outcome; the transition reason it calls for, or None (wait
        for more probes)."""
        self.done += 1
        if slow:
            self.slow += 1
        if failed:
            self.failures += 1
            return PROBE_FAILED
        if slow:
            return PROBE_SLOW
        self.successes += 1
        if self.successes < self.max_probes:
            return None
        return PROBES_HEALTHY

    def snapshot(self) -> WindowSnapshot:
        """The period's outcomes in window terms (a probe failure ends the period, so the
        failures are also the run)."""
        return make_snapshot(self.done, self.failures, self.slow, self.failures)
