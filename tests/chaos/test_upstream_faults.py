"""Chaos at the upstream: latency spikes, hangs, and the upstream process killed and started
again. Real processes: the upstream server (``tests.support.upstream``), ``sidecar proxy``
through the CLI, and host callers in the test.

What must hold: the sidecar's deadline (``timeout_ms``) bounds every host call even when the
upstream never answers; the breaker trips on slow calls and on timeouts and then answers at
once; after the upstream comes back the breaker closes again by itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sidecar.v1 import events_pb2
from tests.chaos._support import FixedPortUpstream, drive, logged_transitions, report
from tests.integration.events._support import CallLoop, wait_until
from tests.support.faultproxy import FaultProxy
from tests.support.procs import free_port
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

TIMEOUT_MS = 400
"""The sidecar's deadline for calls whose host set none."""
SLOW_CALL_MS = 100
SPIKE_MS = 250
"""Upstream latency during the spike: slow for the breaker, within the deadline."""
LATENCY_SLACK_MS = 500
"""What a loaded 2-core machine (several test processes at once) may add on top of TIMEOUT_MS
to a host's p99. Without the deadline a hung call would last the whole 4 s run."""
OPEN_BASE_MS = 500
OPEN_MAX_MS = 2000
RECONNECT_SLACK_S = 8.0
"""After a restart the breaker needs the sidecar's channel to reconnect: gRPC retries a dead
address with a growing backoff (1 s x 1.6 per attempt, +-20 %), so the first attempt after the
restart can come ~3 s later, then the breaker may still be OPEN for up to OPEN_MAX_MS."""

BREAKER = {
    "window": {"type": "count", "size": 10},
    "minimum_calls": 5,
    "failure_rate": 0.5,
    "slow_call_ms": SLOW_CALL_MS,
    "slow_call_rate": 0.5,
    "half_open_probes": 1,
    "open": {"base_ms": OPEN_BASE_MS, "max_ms": OPEN_MAX_MS, "jitter": 0},
}


def _upstream(address: str, route: str) -> dict[str, object]:
    return {"address": address, "routes": [route], "timeout_ms": TIMEOUT_MS, "breaker": BREAKER}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamProcess]:
    with UpstreamProcess(tmp_path_factory.mktemp("chaos-upstream")) as process:
        yield process


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory,
            upstream: UpstreamProcess) -> Iterator[SidecarProcess]:
    config = {
        "service": "chaos",
        "upstreams": {
            "spiky": _upstream(upstream.address, "/spiky."),
            "hanging": _upstream(upstream.address, "/hanging."),
            "hanging-too": _upstream(upstream.address, "/hangingtoo."),
        },
    }
    with SidecarProcess(tmp_path_factory.mktemp("chaos-sidecar"), config) as process:
        yield process


def _state(sidecar: SidecarProcess, name: str) -> int:
    return int(sidecar.breaker(name).state)


def test_a_latency_spike_trips_the_breaker_on_slow_calls_and_host_latency_stays_bounded(
        sidecar: SidecarProcess, upstream: UpstreamProcess) -> None:
    upstream.configure("spiky.Svc", delay_ms=SPIKE_MS)
    load = drive(sidecar.address, "/spiky.Svc/Unary", concurrency=8, duration_s=4.0)
    upstream_calls = upstream.calls("/spiky.Svc/Unary")
    upstream.configure("spiky.Svc")
    changes = logged_transitions(sidecar.process.output(), "spiky")

    rejected = sum(1 for r in load.records if r.breaker_open)
    report("latency-spike", calls=len(load.records), codes=dict(load.codes),
           upstream_calls=upstream_calls, breaker_rejections=rejected,
           p50_ms=round(load.p(0.5)), p99_ms=round(load.p(0.99)),
           max_ms=round(max(load.latencies_ms())), transitions=len(changes),
           first_trip=changes[0] if changes else None)
    assert changes[0] == ("closed", "open", "slow_call_rate")
    assert rejected > upstream_calls, "most calls of the spike should be answered by the breaker"
    assert load.p(0.99) <= TIMEOUT_MS + LATENCY_SLACK_MS


def test_a_hanging_upstream_costs_the_host_at_most_the_deadline_then_the_breaker_answers(
        sidecar: SidecarProcess, upstream: UpstreamProcess) -> None:
    upstream.configure("hanging.Svc", hang=True)
    upstream.configure("hangingtoo.Svc", hang=True)
    load = drive(sidecar.address, "/hanging.Svc/Unary", concurrency=8, duration_s=4.0)
    own_deadline = drive(sidecar.address, "/hangingtoo.Svc/Unary", concurrency=1,
                         duration_s=1.0, timeout_s=0.1)
    def idle(method: str) -> bool:
        return bool(upstream.method_stats(method)["in_flight"] == 0)

    wait_until(lambda: idle("/hanging.Svc/Unary") and idle("/hangingtoo.Svc/Unary"),
               "hung upstream calls cancelled", timeout_s=10)
    stats = upstream.method_stats("/hanging.Svc/Unary")
    seen_deadline_s = upstream.method_stats("/hangingtoo.Svc/Unary")["last_time_remaining_s"]
    upstream.configure("hanging.Svc")
    upstream.configure("hangingtoo.Svc")
    own_timeouts = own_deadline.latencies_ms(grpc.StatusCode.DEADLINE_EXCEEDED)

    timed_out = load.latencies_ms(grpc.StatusCode.DEADLINE_EXCEEDED)
    rejected = [r.latency_s * 1000 for r in load.records if r.breaker_open]
    report("upstream-hang", calls=len(load.records), codes=dict(load.codes),
           upstream_calls=stats["calls"], upstream_cancelled=stats["cancelled"],
           deadline_p99_ms=round(load.p(0.99, grpc.StatusCode.DEADLINE_EXCEEDED)),
           rejection_p99_ms=round(max(rejected) if rejected else -1),
           host_p99_ms=round(load.p(0.99)), host_max_ms=round(max(load.latencies_ms())),
           own_deadline_codes=dict(own_deadline.codes),
           own_deadline_timeouts_max_ms=round(max(own_timeouts)),
           upstream_saw_remaining_s=round(seen_deadline_s, 3))
    assert timed_out, "some calls reached the hanging upstream and timed out"
    assert min(timed_out) >= TIMEOUT_MS * 0.9  # the sidecar's deadline, not something shorter
    assert load.p(0.99) <= TIMEOUT_MS + LATENCY_SLACK_MS
    assert len(rejected) > len(timed_out), "after the trip the breaker answers, not the upstream"
    # a host deadline shorter than timeout_ms wins, and the upstream is told about it
    assert set(own_deadline.codes) <= {"DEADLINE_EXCEEDED", "UNAVAILABLE"}
    assert own_timeouts and min(own_timeouts) >= 90
    assert max(own_timeouts) <= 100 + LATENCY_SLACK_MS
    assert seen_deadline_s <= 0.12  # not timeout_ms (0.4 s): grpc-timeout rounds up a little
    assert stats["in_flight"] == 0  # every hung call was cancelled upstream, none leaked


def test_an_upstream_killed_and_restarted_opens_the_breaker_which_then_recovers_by_itself(
        tmp_path: Path) -> None:
    with FixedPortUpstream(tmp_path, free_port()) as upstream:
        config = {"service": "chaos", "upstreams": {
            "restarted": _upstream(upstream.address, "/restarted.")}}
        with SidecarProcess(tmp_path, config) as sidecar, CallLoop(
                sidecar, "/restarted.Svc/Unary", interval_s=0.02) as calls:
            wait_until(lambda: calls.codes.get(grpc.StatusCode.OK, 0) >= 20, "calls flow")
            upstream.kill()
            killed_at = time.monotonic()
            wait_until(lambda: _state(sidecar, "restarted") == events_pb2.BREAKER_STATE_OPEN,
                       "breaker opens after the upstream died")
            opened_s = time.monotonic() - killed_at
            time.sleep(3.0)  # down long enough for several open periods in a row
            streak = sidecar.breaker("restarted").trip_streak
            upstream.start()
            restarted_at = time.monotonic()
            ok_before = calls.codes.get(grpc.StatusCode.OK, 0)
            wait_until(lambda: _state(sidecar, "restarted") == events_pb2.BREAKER_STATE_CLOSED
                       and calls.codes.get(grpc.StatusCode.OK, 0) > ok_before + 10,
                       "breaker closes again and calls succeed", timeout_s=30)
            recovered_s = time.monotonic() - restarted_at
            codes = {code.name: n for code, n in calls.codes.items()}
    report("upstream-restart", open_after_kill_s=round(opened_s, 2), trip_streak=streak,
           recovered_after_restart_s=round(recovered_s, 2), host_codes=codes)
    assert streak >= 2, "the breaker kept probing and re-opening while the upstream was down"
    assert recovered_s <= OPEN_MAX_MS / 1000 + RECONNECT_SLACK_S


RECOVERY_S = 20.0
"""How long the breaker may take to close after the partition heals (reconnect + open time)."""
KEEPALIVE_MS = 1000
KEEPALIVE_TIMEOUT_MS = 1000
STREAM_DEADLINE_S = 30.0
"""The host's deadline on the stream caught in the partition: without keepalive it would wait
this long."""
DEAD_STREAM_SLACK_S = 4.0
"""What a loaded machine may add to keepalive_ms + keepalive_timeout_ms before the dead
connection is dropped and the stream ends."""


def _reconnects_logged(log_text: str, upstream: str) -> int:
    count = 0
    for line in log_text.splitlines():
        try:
            entry = json.loads(line) if line.startswith("{") else {}
        except ValueError:
            continue
        count += entry.get("event") == "reconnect" and entry.get("upstream") == upstream
    return count


def test_an_upstream_partition_that_black_holed_the_open_connection_heals_by_itself(
        tmp_path: Path, upstream: UpstreamProcess) -> None:
    with FaultProxy(upstream.port) as network:
        # keepalive off: the sidecar must notice the dead connection from its calls alone,
        # whatever ping policy the upstream's server has
        config = {"service": "chaos", "upstreams": {
            "partitioned": {**_upstream(network.address, "/partitioned."),
                            "keepalive_ms": None}}}
        with SidecarProcess(tmp_path, config) as sidecar:
            method = "/partitioned.Svc/Unary"
            assert drive(sidecar.address, method, concurrency=2, duration_s=0.5).codes["OK"] > 0
            network.drop()
            cut_off = drive(sidecar.address, method, concurrency=4, duration_s=3.0)
            assert cut_off.codes["DEADLINE_EXCEEDED"] > 0
            network.pass_through()
            healed_at = time.monotonic()

            def recovered() -> bool:
                burst = drive(sidecar.address, method, concurrency=2, duration_s=0.5)
                return burst.codes["OK"] > 0 and (
                    _state(sidecar, "partitioned") == events_pb2.BREAKER_STATE_CLOSED)

            wait_until(recovered, "calls succeed after the partition heals",
                       timeout_s=RECOVERY_S)
            recovered_s = time.monotonic() - healed_at
            reconnects = _reconnects_logged(sidecar.process.output(), "partitioned")
            stats = network.stats()
    report("upstream-partition", cut_off_codes=dict(cut_off.codes),
           recovered_after_heal_s=round(recovered_s, 2), reconnects_logged=reconnects,
           connections_accepted=stats.connections_accepted,
           connections_black_holed=stats.connections_black_holed)
    assert reconnects >= 1, "the sidecar opened a new connection instead of waiting on the dead one"


async def test_keepalive_ends_a_stream_whose_connection_a_partition_swallowed(
        tmp_path: Path, upstream: UpstreamProcess) -> None:
    with FaultProxy(upstream.port) as network:
        config = {"service": "chaos", "upstreams": {
            "watched": {**_upstream(network.address, "/watched."),
                        "keepalive_ms": KEEPALIVE_MS,
                        "keepalive_timeout_ms": KEEPALIVE_TIMEOUT_MS}}}
        with SidecarProcess(tmp_path, config) as sidecar:
            async with grpc.aio.insecure_channel(sidecar.address) as channel:
                stream = channel.stream_stream("/watched.Svc/Bidi")(timeout=STREAM_DEADLINE_S)
                await stream.write(b"before")
                assert await stream.read() == b"before"
                network.drop()
                cut_at = time.monotonic()
                await stream.write(b"during")
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    await stream.read()
                ended_after_s = time.monotonic() - cut_at
    report("upstream-partition-stream", keepalive_ms=KEEPALIVE_MS,
           keepalive_timeout_ms=KEEPALIVE_TIMEOUT_MS, code=ended.value.code().name,
           ended_after_s=round(ended_after_s, 2))
    assert ended.value.code() is grpc.StatusCode.UNAVAILABLE
    assert ended_after_s <= (KEEPALIVE_MS + KEEPALIVE_TIMEOUT_MS) / 1000 + DEAD_STREAM_SLACK_S
