"""Endpoint connections: when the proxy gives up on a connection to an endpoint that stopped
answering and opens a new one, and which channel options (keepalive) its channels get.

Real grpc.aio channels (they connect lazily: nothing listens, nothing is dialled), fake clock.
"""

from __future__ import annotations

import pytest

from sidecar.breaker import BreakerSettings
from sidecar.config import DEFAULT_KEEPALIVE_MS, DEFAULT_KEEPALIVE_TIMEOUT_MS
from sidecar.protection import BreakerRegistry, GuardSettings, UpstreamGuard, status_codes
from sidecar.proxy.upstream import (
    RECONNECT_MIN_INTERVAL_S,
    STALE_AFTER_TIMEOUTS,
    EndpointLink,
    Upstream,
    upstream_channel_options,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _upstream(clock: Clock, keepalive_ms: int | None = None) -> Upstream:
    settings = GuardSettings(breaker=BreakerSettings(), failure_codes=status_codes(["UNAVAILABLE"]),
                             per_method=False, max_concurrent_requests=10)
    guard = UpstreamGuard("payments", settings, BreakerRegistry())
    return Upstream("payments", 1.0, guard, lambda: None,
                    upstream_channel_options(keepalive_ms, 500), endpoints=["127.0.0.1:1"],
                    clock=clock)


def link(upstream: Upstream) -> EndpointLink:
    return upstream.links()["127.0.0.1:1"]


async def test_timeouts_in_a_row_open_a_new_connection() -> None:
    upstream = _upstream(Clock())
    first = link(upstream).connection
    for _ in range(STALE_AFTER_TIMEOUTS - 1):
        first.timed_out(probe=False)
    assert link(upstream).connection is first
    first.timed_out(probe=False)
    assert link(upstream).connection is not first
    assert link(upstream).connection.channel is not first.channel
    assert link(upstream).reconnects == 1
    await upstream.close(None)


async def test_an_answer_between_timeouts_keeps_the_connection() -> None:
    upstream = _upstream(Clock())
    connection = link(upstream).connection
    for _ in range(3 * STALE_AFTER_TIMEOUTS):
        connection.timed_out(probe=False)
        connection.streak.count = 0  # what the data path does on any answer
    assert link(upstream).connection is connection
    assert link(upstream).reconnects == 0
    await upstream.close(None)


async def test_one_timed_out_probe_is_enough_to_open_a_new_connection() -> None:
    upstream = _upstream(Clock())
    first = link(upstream).connection
    first.timed_out(probe=True)
    assert link(upstream).connection is not first
    await upstream.close(None)


async def test_at_most_one_new_connection_per_interval() -> None:
    clock = Clock()
    upstream = _upstream(clock)
    link(upstream).connection.timed_out(probe=True)
    second = link(upstream).connection
    clock.now += RECONNECT_MIN_INTERVAL_S / 2
    second.timed_out(probe=True)
    assert link(upstream).connection is second, "too soon after the last new connection"
    clock.now += RECONNECT_MIN_INTERVAL_S
    second.timed_out(probe=True)
    assert link(upstream).connection is not second
    assert link(upstream).reconnects == 2
    await upstream.close(None)


async def test_late_timeouts_of_a_replaced_connection_do_not_replace_the_new_one() -> None:
    clock = Clock()
    upstream = _upstream(clock)
    old = link(upstream).connection
    old.timed_out(probe=True)
    new = link(upstream).connection
    clock.now += 10 * RECONNECT_MIN_INTERVAL_S
    for _ in range(2 * STALE_AFTER_TIMEOUTS):
        old.timed_out(probe=True)
    assert link(upstream).connection is new
    assert link(upstream).reconnects == 1
    await upstream.close(None)


async def test_multicallables_come_from_the_current_connection() -> None:
    upstream = _upstream(Clock())
    before = link(upstream).connection.multicallable("unary_unary", "/p.S/M")
    assert link(upstream).connection.multicallable("unary_unary", "/p.S/M") is before  # cached
    link(upstream).connection.timed_out(probe=True)
    assert link(upstream).connection.multicallable("unary_unary", "/p.S/M") is not before
    await upstream.close(None)


async def test_a_reload_with_new_keepalive_settings_opens_a_new_connection() -> None:
    upstream = _upstream(Clock(), keepalive_ms=None)
    first = link(upstream).connection
    upstream.reconfigure(2.0, upstream_channel_options(None, 500))
    assert link(upstream).connection is first and upstream.timeout_s == 2.0
    upstream.reconfigure(2.0, upstream_channel_options(5_000, 500))
    assert link(upstream).connection is not first
    assert link(upstream).reconnects == 0, "a settings change is not counted as a dead connection"
    await upstream.close(None)


def test_keepalive_pings_only_while_calls_are_in_flight() -> None:
    options = dict(upstream_channel_options(DEFAULT_KEEPALIVE_MS, DEFAULT_KEEPALIVE_TIMEOUT_MS))
    assert options["grpc.keepalive_time_ms"] == DEFAULT_KEEPALIVE_MS
    assert options["grpc.keepalive_permit_without_calls"] == 0
    # grpc drops a connection for an unanswered ping only after ping_timeout_ms
    assert options["grpc.keepalive_timeout_ms"] == DEFAULT_KEEPALIVE_TIMEOUT_MS
    assert options["grpc.http2.ping_timeout_ms"] == DEFAULT_KEEPALIVE_TIMEOUT_MS


@pytest.mark.parametrize("keepalive_ms", [None, 10_000])
def test_every_upstream_channel_has_its_own_connection(keepalive_ms: int | None) -> None:
    options = dict(upstream_channel_options(keepalive_ms, 1_000))
    assert options["grpc.use_local_subchannel_pool"] == 1
    assert ("grpc.keepalive_time_ms" in options) is (keepalive_ms is not None)


def test_keepalive_off_sends_no_pings() -> None:
    keys = {key for key, _ in upstream_channel_options(None, 1_000)}
    assert not {k for k in keys if "keepalive" in k or "ping" in k}
