"""The adaptive circuit breaker: one lock, O(1) decisions, listeners told after the fact."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from sidecar.breaker._listeners import tell_mode_change, tell_transition
from sidecar.breaker._probes import Probes
from sidecar.breaker._rules import NEVER, TripLimits, first_trip
from sidecar.breaker._settings import BreakerSettings
from sidecar.breaker._state import (
    FORCED_OPEN,
    MODE_CHANGED,
    OPEN_ELAPSED,
    PROBES_HEALTHY,
    base_open_duration_ms,
    jittered_open_duration_ms,
    require_legal,
)
from sidecar.breaker._streak import TripStreak
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
from sidecar.breaker._window import SlidingWindow, make_window

_DEFAULT_SETTINGS = BreakerSettings()
_CLOSED = State.CLOSED
_OPEN = State.OPEN
_HALF_OPEN = State.HALF_OPEN


class CircuitBreaker:
    """An adaptive circuit breaker for one upstream (docs/breaker.md).

    Usage around one call (try_acquire, then record or release): docs/breaker.md, "Using the
    breaker from code". Every permit goes back exactly once, to :meth:`record` or :meth:`release`.

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
        "_clock", "_counting", "_fast_admit", "_judge_healthy_from", "_last_transition",
        "_limits", "_listeners", "_lock", "_min_calls", "_mode", "_open_duration_s",
        "_open_until", "_probes", "_rng", "_settings", "_slow_call_s", "_state", "_streak",
        "_wall_clock", "_window", "name",
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
        self._streak = TripStreak(clock(), settings.streak_decay_ms / 1000.0)
        self._open_until = 0.0
        self._open_duration_s = 0.0
        self._probes = Probes(settings.half_open_probes, settings.probe_timeout_ms / 1000.0)
        self._last_transition: Transition | None = None
        if self._mode is Mode.FORCED_OPEN:
            # Born forced open: start OPEN (no listener can exist yet, so nothing to notify);
            # leaving forced_open later lets the next call probe at once.
            self._state = _OPEN
            self._open_until = clock()
        self._min_calls = self._judge_healthy_from = 0  # set by _apply_settings_locked
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
            if not (
                failed
                or duration_s > self._slow_call_s
                or window.calls >= self._judge_healthy_from
                or window.aged_out
            ):
                return  # a healthy call made no rule newly true (the rules' contract, _rules)
            reason = first_trip(window, self._limits)  # the rules, in order
            window.aged_out = False
            if reason is None:  # below minimum_calls, the call that reaches it must be judged
                min_calls = self._min_calls
                self._judge_healthy_from = NEVER if window.calls >= min_calls else min_calls
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
            self._probes.discard(permit)

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
            self._streak.commit(now, self._decaying_locked())
            if old is Mode.DISABLED:
                self._window.reset()
                self._streak.restart(now)  # time spent disabled does not count
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
        tell_mode_change(self.name, listeners, change)
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
            self._streak.commit(self._clock(), self._decaying_locked())  # under the old rule
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
                self._probes.reclaim(now)
            streak, decay_in_s = self._streak.view(now, self._decaying_locked())
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
                half_open_in_flight=self._probes.in_flight,
                open_duration_s=open_duration_s,
                streak_decay_in_s=decay_in_s,
            )

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker({self.name!r}, state={self._state.value}, mode={self._mode.value}, "
            f"trip_streak={self._streak.value})"
        )

    # --- internals (all *_locked methods run under self._lock) ------------------------------

    def _apply_settings_locked(self) -> None:
        """Cache the numbers the hot path compares against (attribute reads, no arithmetic)."""
        s = self._settings
        self._slow_call_s = s.slow_call_ms / 1000.0
        limits = self._limits = TripLimits.from_settings(s)
        self._min_calls = limits.minimum_calls
        # A healthy call is judged by the rules only from this many calls in the window (it
        # reaches minimum_calls), after calls aged out, or after a reload (0: the next call).
        # Skipping the others is exact by the rules' contract (_rules). A reset window needs
        # nothing: it is clean, so the next call judged is a failed or slow one.
        self._judge_healthy_from = 0
        self._probes.max_probes = s.half_open_probes
        self._probes.timeout_s = s.probe_timeout_ms / 1000.0
        self._streak.decay_s = s.streak_decay_ms / 1000.0

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
            permit = self._probes.admit(now)
            if permit is None and mode is Mode.METRICS_ONLY:
                permit = ADMIT  # a dry run never rejects; this call is not a probe
        if transition is not None:
            self._notify(transition)
        return permit

    def _record_probe(self, permit: Permit, duration_s: float, failed: bool) -> None:
        slow = duration_s > self._slow_call_s
        with self._lock:
            if not self._probes.take(permit):
                return  # not an outstanding probe: reclaimed, released, or from an earlier period
            now = self._clock()
            reason = self._probes.judge(failed, slow)
            if reason is None:
                return  # healthy, and more healthy probes are needed
            if reason == PROBES_HEALTHY:
                transition = self._move_locked(_CLOSED, PROBES_HEALTHY, now)
            else:
                transition = self._trip_locked(reason, now)  # probe_failed or probe_slow
        self._notify(transition)

    def _trip_locked(self, reason: str, now: float) -> Transition:
        """CLOSED or HALF_OPEN -> OPEN for a health reason: the streak grows, so does the wait."""
        streak = self._streak.grow(now, self._decaying_locked())  # decay earned until now kept
        duration_s = jittered_open_duration_ms(self._settings, streak, self._rng) / 1000.0
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
            trip_streak=self._streak.value,
            mode=self._mode,
            at_monotonic=now,
            at_wall=self._wall_clock(),
        )
        self._state = to
        self._probes.clear()
        if to is _HALF_OPEN:
            self._probes.start_period()
        elif to is _CLOSED:
            self._window.reset()
            self._streak.restart(now)  # the decay clock starts (again) on entering CLOSED
        self._refresh_flags_locked()
        self._last_transition = transition
        return transition

    def _snapshot_locked(self) -> WindowSnapshot:
        if self._state is _HALF_OPEN:
            return self._probes.snapshot()
        return self._window.snapshot()

    def _decaying_locked(self) -> bool:
        """Whether time counts towards streak decay now: CLOSED and not disabled."""
        return self._state is _CLOSED and self._mode is not Mode.DISABLED

    def _notify(self, transition: Transition) -> None:
        """Tell listeners, outside the lock, in the causing thread. Never raises."""
        tell_transition(self.name, self._listeners, transition)
