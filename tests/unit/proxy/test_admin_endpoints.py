"""The endpoints half of the admin API: ``ListEndpoints`` answers built from real upstreams (on
a fake clock), and how ``sidecar endpoints`` turns them into JSON rows and a table."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from sidecar.balancer import BalancerSettings, OutlierSettings, Policy
from sidecar.breaker import BreakerSettings
from sidecar.protection import BreakerRegistry, GuardSettings, UpstreamGuard, status_codes
from sidecar.proxy.admin_endpoints import (
    endpoint_rows,
    format_endpoints_table,
    list_endpoints,
    upstream_endpoints,
)
from sidecar.proxy.discovery import DiscoveryError
from sidecar.proxy.upstream import Upstream
from sidecar.v1 import admin_pb2

WALL = 1_800_000_000.0
"""Unix time of the fake wall clock (2027-01-15T08:00:00Z)."""
ADDRESSES = ("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")  # nothing listens: nothing dialled


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _upstream(name: str, clock: Clock, wall: Clock, *, endpoints: tuple[str, ...] = ADDRESSES,
              policy: Policy = "p2c_ewma") -> Upstream:
    settings = GuardSettings(breaker=BreakerSettings(), failure_codes=status_codes(["UNAVAILABLE"]),
                             per_method=False, max_concurrent_requests=10)
    guard = UpstreamGuard(name, settings, BreakerRegistry())
    return Upstream(name, 1.0, guard, lambda: None, endpoints=endpoints, source="endpoints",
                    balancer=BalancerSettings(policy=policy),
                    outlier=OutlierSettings(consecutive_failures=3, base_ejection_ms=30_000),
                    clock=clock, wall_clock=wall)


@pytest.fixture
async def upstreams() -> AsyncIterator[dict[str, Upstream]]:
    clock, wall = Clock(100.0), Clock(WALL)
    found = {"payments": _upstream("payments", clock, wall),
             "orders": _upstream("orders", clock, wall, endpoints=ADDRESSES[:1],
                                 policy="round_robin")}
    payments = found["payments"].balancer
    sick = next(e for e in payments.endpoints() if e.address == ADDRESSES[1])
    for _ in range(3):  # three failures in a row eject it
        started = payments.start(sick)
        clock.now += 0.010
        payments.finish(sick, started, failed=True)
    healthy = next(e for e in payments.endpoints() if e.address == ADDRESSES[0])
    payments.start(healthy)  # one call still in flight
    yield found
    for upstream in found.values():
        await upstream.close(None)


def _stamp(unix_s: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(unix_s * 1e9))
    return stamp


# --- list_endpoints / upstream_endpoints ----------------------------------------------------


async def test_an_unknown_upstream_is_a_message_naming_the_known_ones_sorted(
        upstreams: dict[str, Upstream]) -> None:
    assert list_endpoints(upstreams, "refunds") == (
        "no upstream named 'refunds'; known upstreams: orders, payments")
    assert list_endpoints({}, "refunds") == (
        "no upstream named 'refunds'; known upstreams: none")


async def test_no_name_lists_every_upstream_by_name_and_a_name_only_that_one(
        upstreams: dict[str, Upstream]) -> None:
    every = list_endpoints(upstreams, "")
    assert isinstance(every, admin_pb2.ListEndpointsResponse)
    assert [u.upstream for u in every.upstreams] == ["orders", "payments"]
    one = list_endpoints(upstreams, "orders")
    assert isinstance(one, admin_pb2.ListEndpointsResponse)
    assert [u.upstream for u in one.upstreams] == ["orders"]
    assert (one.upstreams[0].balancer, one.upstreams[0].source) == ("round_robin", "endpoints")
    assert list_endpoints({}, "") == admin_pb2.ListEndpointsResponse()


async def test_an_ejected_endpoint_shows_its_state_time_out_and_counts(
        upstreams: dict[str, Upstream]) -> None:
    answer = upstream_endpoints(upstreams["payments"])
    assert (answer.upstream, answer.balancer, answer.source) == ("payments", "p2c_ewma",
                                                                  "endpoints")
    assert answer.refresh_failures == 0  # no discovery
    by_address = {info.address: info for info in answer.endpoints}
    assert list(by_address) == list(ADDRESSES)  # sorted by address
    sick = by_address[ADDRESSES[1]]
    assert sick.state == admin_pb2.ENDPOINT_STATE_EJECTED
    # Ejected just now for base_ejection_ms: until = wall now + (monotonic until - now).
    assert sick.ejected_until == _stamp(WALL + 30.0)
    assert (sick.ejections_in_a_row, sick.calls, sick.failures, sick.in_flight) == (1, 3, 3, 0)
    # Still about the default RTT (30 ms): three 10 ms answers within 30 ms move an estimate
    # that decays in time (10 s), not per call, very little.
    assert 29.5 < sick.ewma_ms < 30.0
    healthy = by_address[ADDRESSES[0]]
    assert healthy.state == admin_pb2.ENDPOINT_STATE_ACTIVE
    assert not healthy.HasField("ejected_until")
    assert (healthy.in_flight, healthy.calls, healthy.failures) == (1, 0, 0)


async def test_a_discovered_upstream_reports_its_failed_refreshes() -> None:
    class Broken:
        kind = "file"
        describe = "file /etc/sidecar/orders.txt"
        interval_s = 60.0

        async def resolve(self) -> tuple[str, ...] | None:
            raise DiscoveryError(f"{self.describe}: no such file")

    upstream = _upstream("orders", Clock(0.0), Clock(WALL), endpoints=())
    upstream.use_discovery(Broken())
    await upstream.start_discovery(first_timeout_s=1.0)
    try:
        answer = upstream_endpoints(upstream)
        assert (answer.source, answer.refresh_failures, len(answer.endpoints)) == ("file", 1, 0)
        rows = endpoint_rows(admin_pb2.ListEndpointsResponse(upstreams=[answer]))
        assert rows == [{"upstream": "orders", "balancer": "p2c_ewma", "source": "file",
                         "endpoint": None, "state": "none", "refresh_failures": 1}]
    finally:
        await upstream.close(None)


# --- endpoint_rows / format_endpoints_table -------------------------------------------------


def _response() -> admin_pb2.ListEndpointsResponse:
    response = admin_pb2.ListEndpointsResponse()
    payments = response.upstreams.add(upstream="payments", balancer="p2c_ewma",
                                      source="dns", refresh_failures=2)
    payments.endpoints.add(address="10.0.0.1:50051", state=admin_pb2.ENDPOINT_STATE_ACTIVE,
                           ewma_ms=12.34567, in_flight=3, calls=120, failures=1)
    ejected = payments.endpoints.add(address="10.0.0.2:50051",
                                     state=admin_pb2.ENDPOINT_STATE_EJECTED, ewma_ms=250.0,
                                     ejections_in_a_row=2, calls=40, failures=12)
    ejected.ejected_until.CopyFrom(_stamp(WALL + 60.5))
    payments.endpoints.add(address="10.0.0.3:50051", state=7)  # a state this build lacks
    response.upstreams.add(upstream="refunds", balancer="round_robin", source="file")
    return response


def test_rows_are_plain_json_with_lower_case_states_and_rfc3339_times() -> None:
    rows = endpoint_rows(_response())
    assert rows[0] == {
        "upstream": "payments", "balancer": "p2c_ewma", "source": "dns",
        "endpoint": "10.0.0.1:50051", "state": "active", "ewma_ms": 12.346, "in_flight": 3,
        "ejected_until": None, "ejections_in_a_row": 0, "calls": 120, "failures": 1,
        "refresh_failures": 2,
    }
    assert rows[1]["state"] == "ejected"
    assert rows[1]["ejected_until"] == "2027-01-15T08:01:00.500Z"
    assert (rows[1]["ejections_in_a_row"], rows[1]["calls"], rows[1]["failures"]) == (2, 40, 12)
    assert rows[2]["state"] == "unknown(7)"
    # An upstream without endpoints still has a row, so it is not silently missing.
    assert rows[3] == {"upstream": "refunds", "balancer": "round_robin", "source": "file",
                       "endpoint": None, "state": "none", "refresh_failures": 0}
    assert len(rows) == 4


def test_the_table_has_one_aligned_line_per_endpoint_and_dashes_for_nothing() -> None:
    text = format_endpoints_table(endpoint_rows(_response()))
    lines = text.splitlines()
    assert lines[0].split() == ["UPSTREAM", "ENDPOINT", "STATE", "EWMA_MS", "IN_FLIGHT",
                                "CALLS", "FAILURES", "EJECTIONS", "EJECTED_UNTIL"]
    assert lines[1].split() == ["payments", "10.0.0.1:50051", "active", "12.3", "3", "120",
                                "1", "0", "-"]
    assert lines[2].split() == ["payments", "10.0.0.2:50051", "ejected", "250.0", "0", "40",
                                "12", "2", "2027-01-15T08:01:00.500Z"]
    assert lines[3].split()[2] == "unknown(7)"
    assert lines[4].split() == ["refunds", "(no", "endpoints)", *["-"] * 7]
    assert len(lines) == 5
    # Columns line up: every cell of a column starts where its header does.
    for header in ("ENDPOINT", "STATE", "EWMA_MS", "EJECTED_UNTIL"):
        column = lines[0].index(header)
        for line in lines[1:3]:
            assert line[column - 2:column] == "  " and line[column] != " ", (header, line)
    assert all(line == line.rstrip() for line in lines)


def test_no_upstreams_says_so() -> None:
    assert format_endpoints_table([]) == "no upstreams"
    assert endpoint_rows(admin_pb2.ListEndpointsResponse()) == []
