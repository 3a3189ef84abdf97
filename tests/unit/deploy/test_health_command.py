"""`sidecar health`, the container image's HEALTHCHECK, against a real gRPC health server."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.support.procs import SIDECAR_BIN, free_port


@pytest.fixture
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(grace=None)


def _health(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SIDECAR_BIN, "health", *args], capture_output=True, text=True,
                          timeout=30, env=env)


def test_health_exits_0_when_the_server_is_serving(
        health_server: tuple[str, health.HealthServicer]) -> None:
    address, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    result = _health("--addr", address)
    assert result.returncode == 0, result.stderr
    assert "SERVING" in result.stdout


def test_health_exits_1_when_the_server_is_not_serving(
        health_server: tuple[str, health.HealthServicer]) -> None:
    address, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    result = _health("--addr", address)
    assert result.returncode == 1
    assert "NOT_SERVING" in result.stderr


def test_health_exits_1_when_nothing_listens() -> None:
    result = _health("--addr", f"127.0.0.1:{free_port()}", "--timeout-s", "1")
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr


def test_health_reads_its_default_address_from_the_environment(
        health_server: tuple[str, health.HealthServicer]) -> None:
    address, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    result = _health(env={**os.environ, "SIDECAR_HEALTH_ADDR": address})
    assert result.returncode == 0, result.stderr
    assert address in result.stdout
