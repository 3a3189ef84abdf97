"""``sidecar endpoints`` against a running proxy (both started through the CLI): the table, the
JSON, ``--upstream`` and ``--config``, and an unknown upstream.

The proxy has two upstreams: ``pay`` over two real upstream processes, one of which the test
makes fail until it is ejected (for 30 s: it is still out whenever the CLI looks), and
``drained``, whose endpoints file is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime

import grpc
import pytest

from sidecar.v1 import admin_pb2
from tests.integration.proxy._traffic import (
    EJECTED,
    Admin,
    Replica,
    call_once,
    eventually,
    sidecar_cli,
)
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.integration

EJECTION_S = 30.0
METHOD = "/pay.Echo/Unary"


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Replica]]:
    log_dir = tmp_path_factory.mktemp("replicas")
    with contextlib.ExitStack() as stack:
        found = [Replica(stack.enter_context(UpstreamProcess(log_dir)), name)
                 for name in ("good", "sick")]
        for replica in found:
            replica.reset()
        found[1].set("pay.Echo", code="UNAVAILABLE")
        yield found


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory,
            replicas: list[Replica]) -> Iterator[SidecarProcess]:
    tmp = tmp_path_factory.mktemp("sidecar")
    drained = tmp / "drained.txt"
    drained.write_text("# nothing here\n")
    config = {"upstreams": {
        "pay": {"endpoints": [r.address for r in replicas], "routes": ["/pay."],
                "balancer": "round_robin",
                "outlier_detection": {"consecutive_failures": 3,
                                      "base_ejection_ms": EJECTION_S * 1000},
                "breaker": {"consecutive_failures": None}},
        "drained": {"discovery": {"file": str(drained)}, "routes": ["/drained."]},
    }}
    with SidecarProcess(tmp, config) as process:
        yield process


@pytest.fixture(scope="module")
def ejected(sidecar: SidecarProcess, replicas: list[Replica]) -> float:
    """Calls until the sick endpoint is ejected; its ``ejected_until`` (unix seconds)."""

    async def eject() -> float:
        async with (grpc.aio.insecure_channel(sidecar.address) as channel,
                    Admin(sidecar.admin_address) as admin):

            async def out() -> admin_pb2.EndpointInfo | None:
                await call_once(channel, METHOD)
                info = (await admin.endpoints("pay"))[replicas[1].address]
                return info if info.state == EJECTED else None

            info = await eventually(out, timeout_s=10, interval_s=0.0, what="sick ejected")
            return float(info.ejected_until.ToNanoseconds()) / 1e9

    return asyncio.run(eject())


@pytest.fixture
async def cli_base(sidecar: SidecarProcess, ejected: float) -> AsyncIterator[list[str]]:
    assert ejected - time.time() > 10, "the ejection must outlast the test"
    yield ["endpoints", "--admin", sidecar.admin_address]


def _stable(line: str) -> list[str]:
    """A table line without its EWMA_MS and EJECTED_UNTIL cells."""
    cells = line.split()
    return cells[:3] + cells[4:8]


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def test_json_lists_every_upstream_with_the_ejected_endpoint_and_the_empty_one(
        cli_base: list[str], replicas: list[Replica], ejected: float) -> None:
    result = await sidecar_cli(*cli_base, "--output", "json")
    assert result.returncode == 0, result.stderr
    rows = result.json()
    assert [(row["upstream"], row["endpoint"]) for row in rows] == [
        ("drained", None), *sorted(("pay", r.address) for r in replicas)]
    assert rows[0] == {"upstream": "drained", "balancer": "p2c_ewma", "source": "file",
                       "endpoint": None, "state": "none", "refresh_failures": 0}
    by_endpoint = {row["endpoint"]: row for row in rows[1:]}
    good, sick = by_endpoint[replicas[0].address], by_endpoint[replicas[1].address]
    assert sick["state"] == "ejected"
    assert _parse_time(sick["ejected_until"]) == pytest.approx(ejected, abs=0.01)
    assert sick["ejections_in_a_row"] == 1
    assert sick["failures"] >= 3 and sick["calls"] == sick["failures"]
    assert good["state"] == "active" and good["ejected_until"] is None
    assert good["failures"] == 0 and good["calls"] >= 1
    for row in (good, sick):
        assert (row["balancer"], row["source"], row["in_flight"]) == ("round_robin",
                                                                      "endpoints", 0)
        assert row["ewma_ms"] > 0 and row["ejections_in_a_row"] in (0, 1)


async def test_the_table_shows_one_line_per_endpoint_and_upstream_filters(
        cli_base: list[str], sidecar: SidecarProcess, replicas: list[Replica]) -> None:
    every, only_pay, by_config = await asyncio.gather(
        sidecar_cli(*cli_base),
        sidecar_cli(*cli_base, "--upstream", "pay", "--output", "table"),
        sidecar_cli("endpoints", "--config", str(sidecar.config_path), "--upstream", "pay"))
    for result in (every, only_pay, by_config):
        assert result.returncode == 0, result.stderr
    lines = every.stdout.splitlines()
    assert lines[0].split() == ["UPSTREAM", "ENDPOINT", "STATE", "EWMA_MS", "IN_FLIGHT",
                                "CALLS", "FAILURES", "EJECTIONS", "EJECTED_UNTIL"]
    assert lines[1].split() == ["drained", "(no", "endpoints)", *["-"] * 7]
    cells = {line.split()[1]: line.split() for line in lines[2:]}
    assert set(cells) == {r.address for r in replicas} and len(lines) == 4
    sick, good = cells[replicas[1].address], cells[replicas[0].address]
    assert (sick[0], sick[2], sick[7]) == ("pay", "ejected", "1")
    assert sick[8].endswith("Z") and _parse_time(sick[8]) > time.time()
    assert (good[0], good[2], good[8]) == ("pay", "active", "-")
    # --upstream keeps the header and that upstream's lines; --config dials the same admin
    # API. (The EWMA decays and ejected_until is converted to wall time at each read: those
    # two columns may differ in their last digits between runs.)
    for result in (only_pay, by_config):
        assert [_stable(line) for line in result.stdout.splitlines()] == [
            _stable(line) for line in [lines[0], *lines[2:]]]


async def test_an_unknown_upstream_exits_1_with_not_found_naming_the_known_ones(
        cli_base: list[str]) -> None:
    result = await sidecar_cli(*cli_base, "--upstream", "refunds", "--output", "json")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "NOT_FOUND" in result.stderr
    assert "no upstream named 'refunds'; known upstreams: drained, pay" in result.stderr
