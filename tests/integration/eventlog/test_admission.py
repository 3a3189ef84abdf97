"""A real ``sidecar eventlog serve --max-pending-appends 1`` under a burst of concurrent Appends:
the ones beyond the limit are answered RESOURCE_EXHAUSTED at once with a clear message and a
``grpc-retry-pushback-ms`` trailer, store nothing, and are counted in
``eventlog_appends_refused_total{reason="overloaded"}`` (exported at 0 before the first)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sidecar.resilience.pushback import PUSHBACK_KEY, parse_pushback
from sidecar.v1 import eventlog_pb2
from tests.integration.eventlog._server import EventLogProcess
from tests.integration.eventlog.test_observability import sample, scrape
from tests.support.events import StreamFactory, to_proto

pytestmark = pytest.mark.integration

BURST = 40
MAX_BURSTS = 10
REFUSED = "eventlog_appends_refused_total"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EventLogProcess]:
    with EventLogProcess(tmp_path, "--max-pending-appends", "1") as process:
        yield process


def test_appends_beyond_the_limit_are_refused_with_a_hint_and_store_nothing(
        server: EventLogProcess) -> None:
    assert sample(scrape(server), REFUSED, reason="overloaded") == 0.0
    assert sample(scrape(server), "eventlog_appends_pending") == 0.0
    refused: list[tuple[str, grpc.Call]] = []
    stored: list[str] = []
    for burst in range(MAX_BURSTS):
        producers = [StreamFactory("admission", f"b{burst}-pod-{n}") for n in range(BURST)]
        calls = [
            (p.stream, server.stub.Append.future(
                eventlog_pb2.AppendRequest(events=[to_proto(p.transition())]), timeout=30.0))
            for p in producers
        ]
        for stream, call in calls:
            try:
                call.result()
                stored.append(stream)
            except grpc.RpcError as exc:
                assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                refused.append((stream, exc))  # type: ignore[arg-type]
        if refused:
            break
    assert refused, f"{MAX_BURSTS} bursts of {BURST} concurrent Appends never hit a limit of 1"
    assert stored  # the limit admits one at a time, it does not refuse everything

    for stream, call in refused:
        details = call.details() or ""
        assert "overloaded" in details and "max_pending_appends 1" in details
        assert "nothing was stored" in details
        hints = [str(v) for k, v in call.trailing_metadata() or () if k == PUSHBACK_KEY]
        hint = parse_pushback(hints)
        assert isinstance(hint, float) and 0 < hint <= 10.0, hints
        page = server.stub.ReadStream(eventlog_pb2.ReadStreamRequest(stream=stream),
                                      timeout=10.0)
        assert list(page.events) == []  # a refused Append stores nothing
    for stream in stored:
        page = server.stub.ReadStream(eventlog_pb2.ReadStreamRequest(stream=stream),
                                      timeout=10.0)
        assert len(page.events) == 1
    samples = scrape(server)
    assert sample(samples, REFUSED, reason="overloaded") == float(len(refused))
    assert sample(samples, "eventlog_appends_pending") == 0.0  # every admitted one released
