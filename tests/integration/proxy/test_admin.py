"""The admin API on admin_listen (SidecarAdmin, health, reflection) and `sidecar breakers`."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sidecar.v1 import admin_pb2, events_pb2
from tests.integration.proxy._calls import unary, wait_until
from tests.support.procs import SIDECAR_BIN
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory,
            upstream: UpstreamProcess) -> Iterator[SidecarProcess]:
    breaker = {"window": {"size": 2}, "minimum_calls": 2, "consecutive_failures": None,
               "open": {"base_ms": 60000, "jitter": 0}}
    config = {"upstreams": {
        "orders": {"address": upstream.address, "routes": ["/orders."], "breaker": breaker},
        "stock": {"address": upstream.address, "routes": ["/stock."], "breaker": breaker},
    }}
    with SidecarProcess(tmp_path_factory.mktemp("sidecar"), config) as process:
        yield process


def _code(error: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    return error.value.code()  # type: ignore[no-any-return]


def test_list_breakers_names_every_upstream(sidecar: SidecarProcess) -> None:
    response = sidecar.admin.ListBreakers(admin_pb2.ListBreakersRequest(), timeout=5)
    assert [(b.name, b.upstream) for b in response.breakers] == [
        ("orders", "orders"), ("stock", "stock")]
    assert all(b.state == events_pb2.BREAKER_STATE_CLOSED for b in response.breakers)
    assert all(b.mode == events_pb2.BREAKER_MODE_ENFORCE for b in response.breakers)


async def test_get_breaker_shows_window_open_until_streak_and_last_transition(
        sidecar: SidecarProcess, upstream: UpstreamProcess) -> None:
    upstream.configure("orders.Echo", code="INTERNAL")
    async with grpc.aio.insecure_channel(sidecar.address) as channel:
        for _ in range(2):
            await unary(channel, "/orders.Echo/Unary")
    info = sidecar.breaker("orders")
    assert info.state == events_pb2.BREAKER_STATE_OPEN
    assert (info.window.calls, info.window.failures, info.window.failure_rate) == (2, 2, 1.0)
    assert info.HasField("open_until")
    assert info.trip_streak == 1
    assert info.open_duration_ms == 60000
    assert info.last_transition.from_state == events_pb2.BREAKER_STATE_CLOSED
    assert info.last_transition.to_state == events_pb2.BREAKER_STATE_OPEN
    assert info.last_transition.reason == "failure_rate"
    assert info.last_transition.HasField("at")


def test_unknown_breaker_is_not_found_listing_the_known_ones(sidecar: SidecarProcess) -> None:
    with pytest.raises(grpc.RpcError) as error:
        sidecar.breaker("payments")
    assert _code(error) == grpc.StatusCode.NOT_FOUND
    assert "'payments'" in error.value.details()
    assert "orders, stock" in error.value.details()


def test_missing_name_or_mode_is_invalid_argument(sidecar: SidecarProcess) -> None:
    with pytest.raises(grpc.RpcError) as error:
        sidecar.breaker("")
    assert _code(error) == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("name: ")
    with pytest.raises(grpc.RpcError) as error:
        sidecar.admin.SetBreakerMode(admin_pb2.SetBreakerModeRequest(name="stock"), timeout=5)
    assert _code(error) == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("mode: must be one of BREAKER_MODE_ENFORCE")


async def test_forced_open_mode_rejects_until_set_back_to_enforce(
        sidecar: SidecarProcess, upstream: UpstreamProcess) -> None:
    info = sidecar.admin.SetBreakerMode(admin_pb2.SetBreakerModeRequest(
        name="stock", mode=events_pb2.BREAKER_MODE_FORCED_OPEN), timeout=5)
    assert info.mode == events_pb2.BREAKER_MODE_FORCED_OPEN
    assert info.state == events_pb2.BREAKER_STATE_OPEN
    async with grpc.aio.insecure_channel(sidecar.address) as channel:
        rejected = await unary(channel, "/stock.Echo/Unary")
        assert rejected.breaker_rejected
        assert "forced open" in rejected.details
        assert upstream.calls("/stock.Echo/Unary") == 0

        sidecar.admin.SetBreakerMode(admin_pb2.SetBreakerModeRequest(
            name="stock", mode=events_pb2.BREAKER_MODE_ENFORCE), timeout=5)
        # Back to enforce: the breaker trusts the upstream again only after a healthy probe.
        assert (await unary(channel, "/stock.Echo/Unary")).code == grpc.StatusCode.OK
    assert upstream.calls("/stock.Echo/Unary") == 1


def test_health_reports_serving(sidecar: SidecarProcess) -> None:
    with grpc.insecure_channel(sidecar.admin_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        response = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_admin_and_health_services(sidecar: SidecarProcess) -> None:
    with grpc.insecure_channel(sidecar.admin_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = list(stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
    names = {s.name for s in responses[0].list_services_response.service}
    assert {"sidecar.v1.SidecarAdmin", "grpc.health.v1.Health"} <= names


def test_breakers_cli_prints_json(sidecar: SidecarProcess) -> None:
    result = subprocess.run(
        [SIDECAR_BIN, "breakers", "--admin", sidecar.admin_address, "--output", "json"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {"orders", "stock"}
    assert rows["orders"]["state"] in ("open", "closed", "half_open")
    assert rows["orders"]["mode"] == "enforce"
    assert set(rows["orders"]["window"]) >= {"calls", "failures", "failure_rate"}


def test_breakers_cli_prints_a_table(sidecar: SidecarProcess) -> None:
    result = subprocess.run([SIDECAR_BIN, "breakers", "--admin", sidecar.admin_address],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:3] == ["BREAKER", "STATE", "MODE"]
    assert [row.split()[0] for row in rows] == ["orders", "stock"]


def test_breakers_cli_fails_clearly_without_a_sidecar() -> None:
    result = subprocess.run(
        [SIDECAR_BIN, "breakers", "--admin", "127.0.0.1:1", "--timeout", "1"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "127.0.0.1:1" in result.stderr


async def _breakers_cli(admin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [SIDECAR_BIN, "breakers", "--admin", admin, *args],
        capture_output=True, text=True, timeout=30)


async def test_breakers_show_their_upstreams_calls_in_flight_limit_and_overflows(
        tmp_path: Path, upstream: UpstreamProcess) -> None:
    upstream.configure("held.Svc", hang=True)
    config = {"upstreams": {
        "held": {"address": upstream.address, "routes": ["/held."], "per_method": True,
                 "max_concurrent_requests": 2, "timeout_ms": 30_000},
    }}
    with SidecarProcess(tmp_path, config) as sidecar:
        async with grpc.aio.insecure_channel(sidecar.address) as channel:
            hanging = [channel.unary_unary("/held.Svc/Unary")(b"x") for _ in range(2)]
            await wait_until(lambda: upstream.method_stats("/held.Svc/Unary").get("in_flight") == 2)
            refused = [await unary(channel, "/held.Svc/Other") for _ in range(3)]
            assert {o.code for o in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}

            limit = sidecar.breaker("held/held.Svc/Unary").concurrency
            assert (limit.in_flight, limit.max_concurrent_requests, limit.overflows) == (2, 2, 3)
            listed = await _breakers_cli(sidecar.admin_address, "--output", "json")
            assert listed.returncode == 0, listed.stderr
            rows = json.loads(listed.stdout)
            # upstream-wide numbers on each of the upstream's breakers
            assert [row["concurrency"] for row in rows] == [
                {"in_flight": 2, "max_concurrent_requests": 2, "overflows": 3,
                 "algorithm": "fixed", "limit": 2, "shed": 0, "shedding": False}] * len(rows)
            assert [row["retry_budget"] for row in rows] == [None] * len(rows)
            table = await _breakers_cli(sidecar.admin_address)
            header, first, *_ = table.stdout.splitlines()
            cells = dict(zip(header.split()[:9], first.split()[:9], strict=True))
            assert (cells["IN_FLIGHT"], cells["OVERFLOWS"]) == ("2/2", "3")

            for call in hanging:
                call.cancel()
            await wait_until(
                lambda: sidecar.breaker("held/held.Svc/Unary").concurrency.in_flight == 0)
    upstream.configure("held.Svc")
