"""AdaptiveLimiter: sheds over the limit at once, counts what it shed, and reports shedding
periods with hysteresis (one started/stopped pair per overload), on a fake clock."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.resilience import SheddingChange
from sidecar.resilience.limits import AdaptiveLimiter, LimitSettings
from tests.support.fake_clock import FakeClock


class Recorder:
    def __init__(self) -> None:
        self.changes: list[SheddingChange] = []

    def on_shedding(self, change: SheddingChange) -> None:
        self.changes.append(change)

    @property
    def phases(self) -> list[str]:
        return [change.phase for change in self.changes]


def _limiter(clock: FakeClock, recorder: Recorder, **overrides: object) -> AdaptiveLimiter:
    base: dict[str, object] = {"initial_limit": 4, "min_limit": 1}
    base.update(overrides)
    return AdaptiveLimiter(LimitSettings(**base),  # type: ignore[arg-type]
                           upstream="orders", ceiling=100, clock=clock, listeners=[recorder])


def test_admits_up_to_the_limit_and_sheds_the_rest_at_once() -> None:
    clock, recorder = FakeClock(), Recorder()
    limiter = _limiter(clock, recorder)
    assert [limiter.try_acquire() for _ in range(6)] == [True] * 4 + [False] * 2
    assert (limiter.in_flight, limiter.shed_total, limiter.limit) == (4, 2, 4)
    limiter.release(0.010, dropped=False)
    assert limiter.in_flight == 3
    assert limiter.try_acquire()


def test_one_overload_is_one_started_and_one_stopped() -> None:
    clock, recorder = FakeClock(), Recorder()
    limiter = _limiter(clock, recorder, quiet_ms=1000)
    for _ in range(4):
        limiter.try_acquire()
    for _ in range(50):  # fifty shed calls over 0.5 s: still one period
        assert not limiter.try_acquire()
        clock.advance(0.01)
    assert recorder.phases == ["started"]
    assert limiter.shedding
    clock.advance(0.98)
    limiter.poll()
    assert recorder.phases == ["started"]  # 0.99 s since the last shed: not yet quiet
    clock.advance(0.02)
    limiter.poll()
    assert recorder.phases == ["started", "stopped"]
    started, stopped = recorder.changes
    assert (started.upstream, started.limit, started.in_flight, started.shed,
            started.algorithm, started.duration_s) == ("orders", 4, 4, 1, "gradient2", 0.0)
    assert stopped.shed == 50
    assert stopped.duration_s == pytest.approx(0.49 + 1.0)  # first shed to quiet_ms after last
    assert not limiter.shedding
    assert limiter.shed_total == 50


def test_a_quiet_period_also_ends_on_the_next_release_or_acquire() -> None:
    clock, recorder = FakeClock(), Recorder()
    limiter = _limiter(clock, recorder, quiet_ms=100)
    for _ in range(5):
        limiter.try_acquire()
    clock.advance(0.2)
    limiter.release(0.2, dropped=False)
    assert recorder.phases == ["started", "stopped"]
    for _ in range(4):
        limiter.try_acquire()
    clock.advance(0.2)
    assert recorder.phases == ["started", "stopped", "started"]


def test_close_ends_an_open_period() -> None:
    clock, recorder = FakeClock(), Recorder()
    limiter = _limiter(clock, recorder)
    for _ in range(5):
        limiter.try_acquire()
    limiter.close()
    assert recorder.phases == ["started", "stopped"]
    limiter.close()
    assert recorder.phases == ["started", "stopped"]


def test_a_failing_listener_does_not_hide_the_change_from_the_others() -> None:
    class Broken:
        def on_shedding(self, change: SheddingChange) -> None:
            raise RuntimeError("boom")

    clock, recorder = FakeClock(), Recorder()
    limiter = AdaptiveLimiter(LimitSettings(initial_limit=1, min_limit=1), upstream="orders",
                              ceiling=10, clock=clock, listeners=[Broken(), recorder])
    limiter.try_acquire()
    assert not limiter.try_acquire()
    assert recorder.phases == ["started"]


def test_release_ignored_frees_the_slot_without_a_sample() -> None:
    clock, recorder = FakeClock(), Recorder()
    limiter = _limiter(clock, recorder)
    limiter.try_acquire()
    before = limiter.limit_algorithm.estimate
    limiter.release_ignored()
    assert limiter.in_flight == 0
    assert limiter.limit_algorithm.estimate == before


def test_reconfigure_keeps_counts_and_clamps_the_limit() -> None:
    clock, recorder = FakeClock(), Recorder()
    limiter = AdaptiveLimiter(LimitSettings(initial_limit=20), upstream="orders", ceiling=100,
                              clock=clock, listeners=[recorder])
    for _ in range(21):
        limiter.try_acquire()
    limiter.reconfigure(LimitSettings(initial_limit=10, min_limit=4), ceiling=12)
    assert (limiter.limit, limiter.in_flight, limiter.shed_total, limiter.shedding) == (
        12, 20, 1, True)
    limiter.reconfigure(LimitSettings(algorithm="vegas", initial_limit=10), ceiling=12)
    assert (limiter.algorithm, limiter.limit) == ("vegas", 12)
    with pytest.raises(ValueError, match=r"initial_limit \(10\) must not exceed "
                                         r"max_concurrent_requests \(5\)"):
        limiter.reconfigure(LimitSettings(initial_limit=10), ceiling=5)


@pytest.mark.parametrize(("overrides", "problem"), [
    ({"algorithm": "aimd"}, "algorithm: must be one of gradient2, vegas"),
    ({"min_limit": 30}, "min_limit: must not exceed initial_limit (20), got 30"),
    ({"initial_limit": 0}, "initial_limit: must be an integer >= 1"),
    ({"smoothing": 0.0}, "smoothing: must be a number in (0, 1]"),
    ({"tolerance": 0.5}, "tolerance: must be a number in [1, 100]"),
    ({"long_window": 3}, "long_window: must be an integer >= 10"),
    ({"quiet_ms": float("nan")}, "quiet_ms: must be a number in (0, 3.6e+06]"),
])
def test_bad_settings_name_the_field(overrides: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        LimitSettings(**overrides)  # type: ignore[arg-type]
    assert problem in str(caught.value)


def test_the_package_imports_only_the_standard_library_and_the_listener_port() -> None:
    import sidecar.resilience._types as port
    import sidecar.resilience.limits as limits

    assert limits.__file__ is not None and port.__file__ is not None
    sources = [*sorted(Path(limits.__file__).parent.glob("*.py")), Path(port.__file__)]
    for source in sources:  # the port is the one module from outside the package
        for node in ast.walk(ast.parse(source.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                ok = (name.startswith("sidecar.resilience.limits") or name == port.__name__
                      or name.split(".")[0] in sys.stdlib_module_names | {"__future__"})
                assert ok, f"{source.name} imports {name}"


# --- property: periods alternate and their counts add up -------------------------------------

_step = st.one_of(
    st.tuples(st.just("acquire"), st.integers(1, 8)),
    st.tuples(st.just("release"), st.integers(1, 8)),
    st.tuples(st.just("advance"), st.floats(0.0, 0.6)),
    st.tuples(st.just("poll"), st.just(0)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_step, max_size=120), st.floats(0.05, 0.5))
def test_periods_alternate_started_stopped_and_shed_counts_add_up(
        steps: list[tuple[str, float]], quiet_s: float) -> None:
    clock, recorder = FakeClock(), Recorder()
    limiter = _limiter(clock, recorder, quiet_ms=quiet_s * 1000)
    shed_since_start: list[int] = []  # calls shed in each period, as counted here
    for kind, amount in steps:
        if kind == "acquire":
            for _ in range(int(amount)):
                before = len(recorder.changes)
                admitted = limiter.try_acquire()
                opened = [c for c in recorder.changes[before:] if c.phase == "started"]
                if opened:
                    shed_since_start.append(0)
                if not admitted:
                    shed_since_start[-1] += 1
        elif kind == "release":
            for _ in range(min(int(amount), limiter.in_flight)):
                limiter.release(0.020, dropped=False)
        elif kind == "advance":
            clock.advance(amount)
        else:
            limiter.poll()
    phases = recorder.phases
    assert phases == ["started", "stopped"] * (len(phases) // 2) + ["started"] * (len(phases) % 2)
    assert limiter.shedding == (len(phases) % 2 == 1)
    stopped = [c.shed for c in recorder.changes if c.phase == "stopped"]
    assert stopped == shed_since_start[:len(stopped)]
    assert sum(shed_since_start) == limiter.shed_total
    assert all(c.shed == 1 for c in recorder.changes if c.phase == "started")
    assert all(c.duration_s >= quiet_s - 1e-9 for c in recorder.changes if c.phase == "stopped")
