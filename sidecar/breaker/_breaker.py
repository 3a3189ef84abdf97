"""The adaptive circuit breaker: one lock, O(1) decisions, listeners told after the fact."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from sidecar.breaker._settings import BreakerSettings
from sidecar.breaker._state import (
    CONSECUTIVE_FAILURES,
    FAILURE_RATE,
    FORCED_OPEN,
    MODE_CHANGED,
    OPEN_ELAPSED,
    PROBE_FAILED,
    PROBE_SLOW,
    PROBES_HEALTHY,
    SLOW_CALL_RATE,
    base_open_duration_ms,
    jittered_open_duration_ms,
    require_legal,
)
from sidecar.breaker._types import (
    ADMIT,
    BreakerListener,
    BreakerView,
    Mode,
    ModeChange,
    Permit,
    State,
    Transition,
    WindowSnapshot,
)
from sidecar.breaker._window import SlidingWindow, make_snapshot, make_window

_log = logging.getLogger("sidecar.breaker")

_DEFAULT_SETTINGS = BreakerSettings()
_NEVER = 1 << 62  # a consecutive-failure threshold that cannot be reached
_CLOSED = State.CLOSED
_OPEN = State.OPEN
_HALF_OPEN = State.HALF_OPEN


class CircuitBreaker:
    """An adaptive circuit breaker for one upstream (DESIGN section 3).

    Usage, around one call::

        breaker = CircuitBreaker("payments", BreakerSettings(failure_rate=0.3))

        permit = breaker.try_acquire()
        if permit is None:                        # OPEN, HALF_OPEN full, or forced_open
            raise Unavailable(retry_after_s=breaker.retry_after_s())
        started = time.monotonic()
        try:
            reply = call_upstream()
        except UpstreamFailure:
            breaker.record(permit, time.monotonic() - started, failed=True)
            raise
        except BaseException:                     # cancelled: no outcome to count
            breaker.release(permit)
            raise
        breaker.record(permit, time.monotonic() - started, failed=False)

    Every permit goes back exactly once, to :meth:`record` or :meth:`release`.

    Threading and asyncio: one ``threading.Lock`` per breaker guards all state, and is held only
    for O(1) work (no I/O, no waiting, no callbacks), so every method is safe to call from any
    thread and from asyncio code directly on the event loop: none of them blocks beyond a few
    microseconds of lock contention, and none awaits. In CLOSED, ``try_acquire`` does not even
    take the lock (it reads one flag; a call admitted an instant before a trip is indistinguishable
    from one that arrived earlier, and its late outcome is ignored). Listeners are called after
    the lock is released, in the thread or task that caused the change (see
    :class:`BreakerListener`). Time comes only from the injected ``clock`` (monotonic seconds)
    and ``wall_clock`` (unix seconds, for records); jitter only from the injected ``rng``.
    """

    __slots__ = (
        "_clock",
        "_consecutive",
        "_counting",
        "_decay_from",
        "_decay_s",
        "_failure_rate",
        "_fast_admit",
        "_last_transition",
        "_listeners",
        "_lock",
        "_max_probes",
        "_min_calls",
        "_mode",
        "_open_duration_s",
        "_open_until",
        "_probe_failures",
        "_probe_slow",
        "_probe_successes",
        "_probe_timeout_s",
        "_probes",
        "_probes_done",
        "_rng",
        "_settings",
        "_slow_call_rate",
        "_slow_call_s",
        "_state",
        "_streak",
        "_wall_clock",
        "_window",
        "name",
    )

    def __init__(
        self,
        name: str,
        settings: BreakerSettings = _DEFAULT_SETTINGS,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng if rng is not None else random.Random()
        self._lock = threading.Lock()
        self._listeners: tuple[BreakerListener, ...] = ()
        self._settings = settings
        self._state = _CLOSED
        self._mode = settings.mode
        self._window: SlidingWindow = make_window(settings, clock)
        self._streak = 0
        # The trip streak falls by one per _decay_s spent CLOSED (not disabled) without a trip,
        # counted from _decay_from: when CLOSED was entered, decay resumed, or the last step.
        self._decay_from = clock()
        self._open_until = 0.0
        self._open_duration_s = 0.0
        # HALF_OPEN bookkeeping: outstanding probe permits (insertion-ordered, oldest first).
        self._probes: dict[Permit, None] = {}
        self._probes_done = self._probe_failures = self._probe_slow = self._probe_successes = 0
        self._last_transition: Transition | None = None
        if self._mode is Mode.FORCED_OPEN:
            # Born forced open: start OPEN (no listener can exist yet, so nothing to notify);
            # leaving forced_open later lets the next call probe at once.
            self._state = _OPEN
            self._open_until = clock()
        self._apply_settings_locked()
        self._refresh_flags_locked()

    # --- read-only properties ---------------------------------------------------------------

    @property
    def state(self) -> State:
        """The current state (OPEN stays OPEN until a ``try_acquire`` finds it elapsed)."""
        return self._state

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def settings(self) -> BreakerSettings:
        """The settings in force; change them with :meth:`update_settings`."""
        return self._settings

    # --- the data path ----------------------------------------------------------------------

    def try_acquire(self) -> Permit | None:
        """Ask to make one call. ``None`` means reject now (fail fast, or use the fallback).

        Non-blocking and O(1). In CLOSED it reads one flag and returns the shared permit.
        """
        if self._fast_admit:
            return ADMIT
        return self._acquire_slow()

    def record(self, permit: Permit, duration_s: float, failed: bool) -> None:
        """Report how an admitted call ended. O(1), never blocks.

        ``failed`` is the caller's classification (e.g. the gRPC status is a failure code);
        the call is slow when ``duration_s * 1000 > slow_call_ms``. Outcomes of calls admitted
        before the breaker left CLOSED, and of probes whose slot was already reclaimed, are
        ignored: they describe a past the breaker has already judged.
        """
        if permit is not ADMIT:
            self._record_probe(permit, duration_s, failed)
            return
        # acquire/try/finally rather than ``with``: the same guarantee, half the cost (~60 ns).
        lock = self._lock
        lock.acquire()
        try:
            if not self._counting:
                return
            window = self._window
            window.record(failed, duration_s > self._slow_call_s)
            if not (failed or window.failures or window.slow_calls):
                return  # nothing bad in the window: no rule can trip (the common case)
            calls = window.calls
            if calls >= self._min_calls:
                failures = window.failures
                slow_calls = window.slow_calls
                if failures and failures / calls >= self._failure_rate:
                    reason = FAILURE_RATE
                elif slow_calls and slow_calls / calls >= self._slow_call_rate:
                    reason = SLOW_CALL_RATE
                elif failed and window.run >= self._consecutive <= calls:
                    reason = CONSECUTIVE_FAILURES
                else:
                    return
            elif failed and window.run >= self._consecutive <= calls:
                reason = CONSECUTIVE_FAILURES
            else:
                return
            transition = self._trip_locked(reason, self._clock())
        finally:
            lock.release()
        self._notify(transition)

    def release(self, permit: Permit) -> None:
        """Hand back a permit whose call ended without a countable outcome (e.g. cancelled).

        Frees a probe slot; records nothing.
        """
        if not permit.probe:
            return
        with self._lock:
            self._probes.pop(permit, None)

    def retry_after_s(self) -> float:
        """Seconds until an OPEN breaker may admit a probe; 0.0 when not OPEN.

        When forced open there is no scheduled end; the answer is then ``open_max_ms`` as a
        polite back-off hint.
        """
        with self._lock:
            if self._state is not _OPEN:
                return 0.0
            if self._mode is Mode.FORCED_OPEN:
                return self._settings.open_max_ms / 1000.0
            return max(0.0, self._open_until - self._clock())

    # --- control ----------------------------------------------------------------------------

    def set_mode(self, mode: Mode, source: str = "admin") -> None:
        """Switch mode at runtime; listeners hear ``on_mode_change`` then any transition.

        - to ``forced_open``: CLOSED/HALF_OPEN -> OPEN (reason ``forced_open``); the trip
          streak is untouched (an operator's decision is not a trip).
        - from ``forced_open``: the breaker stays OPEN with its open period already over (or
          the rest of the period it had tripped for), so the next call probes: an upstream
          is trusted again only after healthy probes.
        - to ``disabled``: OPEN/HALF_OPEN -> CLOSED (reason ``mode_changed``) and the window
          is emptied; from ``disabled`` the window starts empty again.
        - between ``enforce`` and ``metrics_only``: state and window are kept.
        """
        mode = Mode(mode)
        transition: Transition | None = None
        with self._lock:
            old = self._mode
            if mode is old:
                return
            now = self._clock()
            self._commit_decay_locked(now)
            if old is Mode.DISABLED:
                self._window.reset()
                self._decay_from = now  # time spent disabled does not count
            self._mode = mode
            if mode is Mode.FORCED_OPEN:
                if self._state is not _OPEN:
                    self._open_until = now
                    self._open_duration_s = 0.0
                    transition = self._move_locked(_OPEN, FORCED_OPEN, now)
            elif mode is Mode.DISABLED:
                if self._state is not _CLOSED:
                    transition = self._move_locked(_CLOSED, MODE_CHANGED, now)
                else:
                    self._window.reset()
            self._refresh_flags_locked()
            change = ModeChange(self.name, old, mode, source, self._wall_clock())
            listeners = self._listeners
        for listener in listeners:
            try:
                listener.on_mode_change(change)
            except Exception:
                _log.exception("breaker %s: listener %r failed on mode change", self.name, listener)
        if transition is not None:
            self._notify(transition)

    def update_settings(self, settings: BreakerSettings) -> None:
        """Apply reloaded settings, keeping state, trip streak and (if its shape is unchanged)
        the window's counts. A window of a different type or size starts empty. Time already
        spent towards the next streak decay step carries over to a new ``streak_decay_ms``.

        The mode is applied (as ``source="config"``) only when the new settings change it
        from the previous settings, so a reload that does not touch ``mode`` keeps an
        operator's runtime override.
        """
        with self._lock:
            old = self._settings
            self._commit_decay_locked(self._clock())  # judged under the old decay rule
            if not old.same_window_shape(settings):
                self._window = make_window(settings, self._clock)
            self._settings = settings
            self._apply_settings_locked()
            mode_changed = settings.mode != old.mode
        if mode_changed:
            self.set_mode(settings.mode, source="config")

    def add_listener(self, listener: BreakerListener) -> None:
        """Subscribe to transitions and mode changes (see :class:`BreakerListener`)."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: BreakerListener) -> None:
        """Unsubscribe; unknown listeners are ignored."""
        with self._lock:
            self._listeners = tuple(x for x in self._listeners if x is not listener)

    def view(self) -> BreakerView:
        """A consistent read of the breaker (for admin APIs, dashboards and tests)."""
        with self._lock:
            now = self._clock()
            wall = self._wall_clock()
            state = self._state
            if state is _HALF_OPEN:
                self._reclaim_expired_probes_locked(now)
            streak, decay_in_s = self._decay_view_locked(now)
            if state is _OPEN:
                open_duration_s = self._open_duration_s
                forced = self._mode is Mode.FORCED_OPEN
                open_until_wall = None if forced else wall + (self._open_until - now)
            else:
                open_duration_s = base_open_duration_ms(self._settings, streak + 1) / 1000.0
                open_until_wall = None
            return BreakerView(
                name=self.name,
                state=state,
                mode=self._mode,
                snapshot=self._snapshot_locked(),
                open_until_wall=open_until_wall,
                trip_streak=streak,
                last_transition=self._last_transition,
                half_open_in_flight=len(self._probes),
                open_duration_s=open_duration_s,
                streak_decay_in_s=decay_in_s,
            )

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker({self.name!r}, state={self._state.value}, mode={self._mode.value}, "
            f"trip_streak={self._streak})"
        )

    # --- internals (all *_locked methods run under self._lock) ------------------------------

    def _apply_settings_locked(self) -> None:
        """Cache the numbers the hot path compares against (attribute reads, no arithmetic)."""
        s = self._settings
        count = s.window_type == "count"
        self._slow_call_s = s.slow_call_ms / 1000.0
        self._min_calls = min(s.minimum_calls, s.window_size) if count else s.minimum_calls
        self._failure_rate = s.failure_rate
        self._slow_call_rate = s.slow_call_rate
        if s.consecutive_failures is None:
            self._consecutive = _NEVER
        else:
            self._consecutive = (
                min(s.consecutive_failures, s.window_size) if count else s.consecutive_failures
            )
        self._max_probes = s.half_open_probes
        self._probe_timeout_s = s.probe_timeout_ms / 1000.0
        self._decay_s = s.streak_decay_ms / 1000.0

    def _refresh_flags_locked(self) -> None:
        """Recompute the two flags the hot path reads instead of comparing state and mode."""
        counting = self._state is _CLOSED and (
            self._mode is Mode.ENFORCE or self._mode is Mode.METRICS_ONLY
        )
        self._counting = counting
        self._fast_admit = counting or self._mode is Mode.DISABLED

    def _acquire_slow(self) -> Permit | None:
        transition: Transition | None = None
        with self._lock:
            mode = self._mode
            state = self._state
            if mode is Mode.FORCED_OPEN:
                return None
            if mode is Mode.DISABLED or state is _CLOSED:
                return ADMIT  # the fast-path flag was read an instant before it changed
            now = self._clock()
            if state is _OPEN:
                if now < self._open_until:
                    return ADMIT if mode is Mode.METRICS_ONLY else None
                transition = self._move_locked(_HALF_OPEN, OPEN_ELAPSED, now)
            permit = self._admit_probe_locked(now)
            if permit is None and mode is Mode.METRICS_ONLY:
                permit = ADMIT  # a dry run never rejects; this call is not a probe
        if transition is not None:
            self._notify(transition)
        return permit

    def _reclaim_expired_probes_locked(self, now: float) -> None:
        """Free the slots of probes that never reported. At most ``half_open_probes`` steps."""
        probes = self._probes
        if probes:
            expired = [p for p in probes if p.expires_at <= now]
            for p in expired:
                del probes[p]

    def _admit_probe_locked(self, now: float) -> Permit | None:
        self._reclaim_expired_probes_locked(now)
        # Never more than half_open_probes at once, and never more than are still needed:
        # without timeouts or releases, one HALF_OPEN period admits exactly half_open_probes.
        if self._probe_successes + len(self._probes) >= self._max_probes:
            return None
        permit = Permit(probe=True, expires_at=now + self._probe_timeout_s)
        self._probes[permit] = None
        return permit

    def _record_probe(self, permit: Permit, duration_s: float, failed: bool) -> None:
        slow = duration_s > self._slow_call_s
        with self._lock:
            if permit not in self._probes:
                return  # not an outstanding probe: reclaimed, released, or from an earlier period
            del self._probes[permit]
            self._probes_done += 1
            if slow:
                self._probe_slow += 1
            now = self._clock()
            if failed:
                self._probe_failures += 1
                transition = self._trip_locked(PROBE_FAILED, now)
            elif slow:
                transition = self._trip_locked(PROBE_SLOW, now)
            else:
                self._probe_successes += 1
                if self._probe_successes < self._max_probes:
                    return
                transition = self._move_locked(_CLOSED, PROBES_HEALTHY, now)
        self._notify(transition)

    def _trip_locked(self, reason: str, now: float) -> Transition:
        """CLOSED or HALF_OPEN -> OPEN for a health reason: the streak grows, so does the wait."""
        self._commit_decay_locked(now)  # decay earned until now is kept...
        self._decay_from = now  # ...and the decay clock starts again (on entering CLOSED, too)
        self._streak += 1
        duration_s = jittered_open_duration_ms(self._settings, self._streak, self._rng) / 1000.0
        self._open_duration_s = duration_s
        self._open_until = now + duration_s
        return self._move_locked(_OPEN, reason, now, duration_s)

    def _move_locked(
        self, to: State, reason: str, now: float, open_duration_s: float = 0.0
    ) -> Transition:
        """The only place the state changes: checked against the table, recorded, flagged."""
        source = self._state
        require_legal(source, to, reason)
        transition = Transition(
            breaker=self.name,
            from_state=source,
            to_state=to,
            reason=reason,
            snapshot=self._snapshot_locked(),
            open_duration_s=open_duration_s,
            trip_streak=self._streak,
            mode=self._mode,
            at_monotonic=now,
            at_wall=self._wall_clock(),
        )
        self._state = to
        self._probes.clear()
        if to is _HALF_OPEN:
            self._probes_done = self._probe_failures = self._probe_slow = 0
            self._probe_successes = 0
        elif to is _CLOSED:
            self._window.reset()
            self._decay_from = now  # the decay clock starts (again) on entering CLOSED
        self._refresh_flags_locked()
        self._last_transition = transition
        return transition

    def _snapshot_locked(self) -> WindowSnapshot:
        if self._state is _HALF_OPEN:
            return make_snapshot(
                self._probes_done, self._probe_failures, self._probe_slow, self._probe_failures
            )
        return self._window.snapshot()

    def _decaying_locked(self) -> bool:
        """Whether time counts towards streak decay now: CLOSED, not disabled, a streak to decay."""
        return self._state is _CLOSED and self._mode is not Mode.DISABLED and self._streak > 0

    def _pending_decay_locked(self, now: float) -> int:
        """Whole ``streak_decay_ms`` periods spent CLOSED since ``_decay_from``. O(1)."""
        if not self._decaying_locked():
            return 0
        return max(0, int((now - self._decay_from) // self._decay_s))

    def _decay_view_locked(self, now: float) -> tuple[int, float]:
        """The streak with decay earned by ``now`` and the seconds until it next falls by one
        (0.0 when it cannot: streak 0, not CLOSED, or disabled). Reads only, commits nothing."""
        steps = self._pending_decay_locked(now)
        streak = max(0, self._streak - steps)
        if streak == 0 or not self._decaying_locked():
            return streak, 0.0
        next_step = self._decay_from + (steps + 1) * self._decay_s
        return streak, max(0.0, next_step - now)

    def _commit_decay_locked(self, now: float) -> None:
        """Turn time spent CLOSED into streak decay (lazily: no per-call work, whatever the
        call volume). Keeps the part of a period already spent, so reads never lose time."""
        steps = self._pending_decay_locked(now)
        if steps <= 0:
            return
        if steps >= self._streak:
            self._streak = 0
            self._decay_from = now
        else:
            self._streak -= steps
            self._decay_from += steps * self._decay_s

    def _notify(self, transition: Transition) -> None:
        """Tell listeners, outside the lock, in the causing thread. Never raises."""
        for listener in self._listeners:
            try:
                listener.on_transition(transition)
            except Exception:
                _log.exception(
                    "breaker %s: listener %r failed on %s -> %s",
                    self.name,
                    listener,
                    transition.from_state.value,
                    transition.to_state.value,
                )
