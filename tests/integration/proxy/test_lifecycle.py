"""Starting with a bad config, reloading on SIGHUP, draining on SIGTERM: the real CLI process."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from sidecar.v1 import admin_pb2, events_pb2
from tests.integration.proxy._calls import unary, wait_until
from tests.support.procs import SIDECAR_BIN, free_port
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.integration

OPEN = events_pb2.BREAKER_STATE_OPEN


def _accepts(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.2):
            return True
    except OSError:
        return False


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SIDECAR_BIN, *args], capture_output=True, text=True, timeout=30)


def test_bad_config_is_refused_with_key_paths_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({
        "service": "checkout",
        "upstreams": {"payments": {"address": "nowhere", "routes": ["/p."],
                                   "breaker": {"failure_rate": 7}}},
    }))
    result = _run_cli("proxy", "--config", str(path))
    assert result.returncode == 2
    assert "upstreams.payments.address: " in result.stderr
    assert "upstreams.payments.breaker.failure_rate: must be > 0 and <= 1" in result.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = _run_cli("proxy", "--config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert "cannot read" in result.stderr


def test_taken_listen_port_exits_1_naming_the_key(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "sidecar.yaml"
        path.write_text(yaml.safe_dump({
            "service": "checkout", "listen": f"127.0.0.1:{port}",
            "admin_listen": f"127.0.0.1:{free_port()}",
            "metrics_listen": f"127.0.0.1:{free_port()}",
            "upstreams": {"payments": {"address": "127.0.0.1:9", "routes": ["/p."]}},
        }))
        result = _run_cli("proxy", "--config", str(path))
    assert result.returncode == 1
    assert f"listen: cannot listen on 127.0.0.1:{port}" in result.stderr


def _config(upstream: UpstreamProcess, failure_rate: float = 0.5,
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    upstreams: dict[str, Any] = {
        "kept": {"address": upstream.address, "routes": ["/kept."],
                 "breaker": {"window": {"size": 2}, "minimum_calls": 2,
                             "consecutive_failures": None,
                             "failure_rate": failure_rate,
                             "open": {"base_ms": 60000, "jitter": 0}}},
    }
    upstreams.update(extra or {})
    return {"shutdown_grace_s": 5, "upstreams": upstreams}


async def test_sighup_applies_a_good_file_and_keeps_breaker_state(
        tmp_path: Path, upstream: UpstreamProcess) -> None:
    with SidecarProcess(tmp_path, _config(upstream)) as sidecar:
        async with grpc.aio.insecure_channel(sidecar.address) as channel:
            upstream.configure("kept.Echo", code="UNAVAILABLE")
            for _ in range(2):
                await unary(channel, "/kept.Echo/Unary")
            assert sidecar.breaker("kept").state == OPEN
            assert (await unary(channel, "/added.Echo/Unary")).code == \
                grpc.StatusCode.UNIMPLEMENTED

            new = _config(upstream, failure_rate=0.9, extra={
                "added": {"address": upstream.address, "routes": ["/added."]}})
            sidecar.reload({**sidecar.config, **new})
            sidecar.wait_for_log("config reloaded")

            assert (await unary(channel, "/added.Echo/Unary")).code == grpc.StatusCode.OK
            kept = sidecar.breaker("kept")
            assert kept.state == OPEN  # state and streak survive a settings change
            assert kept.trip_streak == 1
            assert (await unary(channel, "/kept.Echo/Unary")).breaker_rejected


async def test_sighup_with_a_bad_file_keeps_the_running_config(
        tmp_path: Path, upstream: UpstreamProcess) -> None:
    with SidecarProcess(tmp_path, _config(upstream)) as sidecar:
        async with grpc.aio.insecure_channel(sidecar.address) as channel:
            bad = _config(upstream, extra={"oops": {"address": "127.0.0.1:1", "routes": ["x"]}})
            bad["upstreams"]["kept"]["breaker"]["failure_rate"] = 3
            sidecar.reload({**sidecar.config, **bad})

            log = sidecar.wait_for_log("config reload refused")
            assert "upstreams.kept.breaker.failure_rate: must be > 0 and <= 1" in log
            assert "upstreams.oops.routes[0]" in log
            assert sidecar.process.proc.poll() is None
            assert (await unary(channel, "/kept.Fine/Unary")).code == grpc.StatusCode.OK
            listed = sidecar.admin.ListBreakers(admin_pb2.ListBreakersRequest()).breakers
            assert [b.name for b in listed] == ["kept"]

            sidecar.reload("service: [unclosed")
            sidecar.wait_for_log("(yaml)")
            assert (await unary(channel, "/kept.Fine/Unary")).code == grpc.StatusCode.OK


async def test_sighup_with_a_non_utf8_file_or_a_directory_keeps_serving(
        tmp_path: Path, upstream: UpstreamProcess) -> None:
    with SidecarProcess(tmp_path, _config(upstream)) as sidecar:
        path = sidecar.config_path
        async with grpc.aio.insecure_channel(sidecar.address) as channel:
            path.write_bytes(yaml.safe_dump(sidecar.config).encode() + b"# caf\xe9\n")
            sidecar.process.signal(signal.SIGHUP)
            sidecar.wait_for_log("is not UTF-8: byte 0xe9 at offset")
            assert (await unary(channel, "/kept.Fine/Unary")).code == grpc.StatusCode.OK

            path.unlink()
            path.mkdir()
            sidecar.process.signal(signal.SIGHUP)
            sidecar.wait_for_log("is a directory, not a YAML file")
            assert sidecar.process.proc.poll() is None
            assert (await unary(channel, "/kept.Fine/Unary")).code == grpc.StatusCode.OK

            path.rmdir()  # the handler still works after the failures: a good file applies
            sidecar.reload({**sidecar.config, **_config(upstream, extra={
                "added": {"address": upstream.address, "routes": ["/added."]}})})
            sidecar.wait_for_log("config reloaded")
            assert (await unary(channel, "/added.Echo/Unary")).code == grpc.StatusCode.OK
        output = sidecar.process.output()
    refusals = [line for line in output.splitlines() if "config reload refused" in line]
    assert len(refusals) == 2, refusals
    assert str(path) in refusals[0] and str(path) in refusals[1]
    assert "Traceback" not in output


async def test_sigterm_drains_in_flight_calls_then_exits_0(
        tmp_path: Path, upstream: UpstreamProcess) -> None:
    upstream.configure("drain.Echo", delay_ms=1500)
    sidecar = SidecarProcess(tmp_path, _config(upstream, extra={
        "drain": {"address": upstream.address, "routes": ["/drain."]}}))
    try:
        async with grpc.aio.insecure_channel(sidecar.address) as channel:
            slow = asyncio.ensure_future(unary(channel, "/drain.Echo/Unary", b"in-flight"))
            await wait_until(
                lambda: upstream.method_stats("/drain.Echo/Unary").get("in_flight") == 1)

            sidecar.process.signal(signal.SIGTERM)
            await wait_until(lambda: not _accepts(sidecar.address))  # stopped accepting
            async with grpc.aio.insecure_channel(sidecar.address) as late_channel:
                late = await unary(late_channel, "/drain.Echo/Unary", timeout=2)
            outcome = await slow

            assert outcome.code == grpc.StatusCode.OK
            assert outcome.messages == [b"in-flight"]
            assert late.code == grpc.StatusCode.UNAVAILABLE  # no new calls while draining
            assert sidecar.process.wait(timeout_s=10) == 0
            assert upstream.method_stats("/drain.Echo/Unary")["calls"] == 1
    finally:
        sidecar.close()
