"""Observer plumbing: composites fan out, isolate failures, and cost nothing when unused."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc
import pytest

from sidecar.protection import (
    NOOP_OBSERVER,
    NOOP_SCOPE,
    CallInfo,
    CallScope,
    CompositeObserver,
    MetadataItem,
    combine_observers,
)

INFO = CallInfo("pay", "/pay.v1.P/Charge", "pay", "unary_unary", "ipv4:127.0.0.1:1",
                "127.0.0.1:2", (("x-a", "1"),))


class Recording:
    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail

    @contextlib.contextmanager
    def start_call(self, info: CallInfo) -> Iterator[CallScope]:
        self.log.append(f"{self.name}.enter")
        try:
            yield self  # type: ignore[misc]
        finally:
            self.log.append(f"{self.name}.exit")

    def outgoing_metadata(self, metadata: list[MetadataItem]) -> None:
        metadata.append((f"x-{self.name}", "1"))

    def rejected(self, reason: str, retry_after_ms: int) -> None:
        self.log.append(f"{self.name}.rejected:{reason}")

    def fallback(self, kind: str, target: str) -> None:
        self.log.append(f"{self.name}.fallback:{kind}")

    def overflow(self) -> None:
        self.log.append(f"{self.name}.overflow")

    def endpoint(self, address: str) -> None:
        pass

    def finish(self, code: grpc.StatusCode, duration_s: float) -> None:
        if self.fail:
            raise RuntimeError("observer bug")
        self.log.append(f"{self.name}.finish:{code.name}")


def test_composite_enters_in_order_exits_in_reverse_and_fans_out() -> None:
    log: list[str] = []
    composite = CompositeObserver([Recording("tracing", log), Recording("metrics", log)])
    metadata: list[MetadataItem] = []
    with composite.start_call(INFO) as scope:
        scope.outgoing_metadata(metadata)
        scope.rejected("open", 100)
        scope.finish(grpc.StatusCode.UNAVAILABLE, 0.01)
    assert metadata == [("x-tracing", "1"), ("x-metrics", "1")]
    assert log == ["tracing.enter", "metrics.enter", "tracing.rejected:open",
                   "metrics.rejected:open", "tracing.finish:UNAVAILABLE",
                   "metrics.finish:UNAVAILABLE", "metrics.exit", "tracing.exit"]


def test_a_failing_observer_never_hides_the_others(caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []
    composite = CompositeObserver([Recording("bad", log, fail=True), Recording("good", log)])
    with composite.start_call(INFO) as scope:
        scope.finish(grpc.StatusCode.OK, 0.01)
    assert "good.finish:OK" in log
    assert "call observer failed in finish" in caplog.text


def test_combine_picks_the_cheapest_equivalent() -> None:
    one = Recording("one", [])
    assert combine_observers([]) is NOOP_OBSERVER
    assert combine_observers([NOOP_OBSERVER]) is NOOP_OBSERVER
    assert combine_observers([NOOP_OBSERVER, one]) is one
    assert isinstance(combine_observers([one, Recording("two", [])]), CompositeObserver)


def test_noop_scope_is_shared_and_ignores_everything() -> None:
    with NOOP_OBSERVER.start_call(INFO) as scope:
        assert scope is NOOP_SCOPE
        scope.finish(grpc.StatusCode.OK, 0.0)
