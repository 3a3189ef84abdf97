"""Real servers the fuzz tests throw bad input at: one event log and one sidecar (with its
upstream) for the whole package, started through the CLI like a user would."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.fuzz._checks import ServerUnderFuzz
from tests.integration.eventlog._server import EventLogProcess
from tests.support.procs import free_port, require_binary
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess


@dataclass
class SidecarStack:
    upstream: UpstreamProcess
    sidecar: SidecarProcess
    metrics_port: int

    @property
    def proxy_port(self) -> int:
        return int(self.sidecar.address.rsplit(":", 1)[1])

    @property
    def admin_port(self) -> int:
        return int(self.sidecar.admin_address.rsplit(":", 1)[1])


@pytest.fixture(scope="package")
def eventlog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EventLogProcess]:
    require_binary("sidecar")
    with EventLogProcess(tmp_path_factory.mktemp("fuzz-eventlog")) as server:
        yield server


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarStack]:
    require_binary("sidecar")
    workdir = tmp_path_factory.mktemp("fuzz-sidecar")
    metrics_port = free_port()
    with UpstreamProcess(workdir) as upstream:
        config = {
            "service": "fuzz",
            "metrics_listen": f"127.0.0.1:{metrics_port}",
            "upstreams": {"echo": {"address": upstream.address, "routes": ["/fuzz."]}},
        }
        with SidecarProcess(workdir, config, name="fuzz") as sidecar:
            yield SidecarStack(upstream, sidecar, metrics_port)


@pytest.fixture(scope="package")
def eventlog_server(eventlog: EventLogProcess) -> ServerUnderFuzz:
    assert eventlog.proc is not None
    return ServerUnderFuzz("event log", eventlog.proc, eventlog.address)


@pytest.fixture(scope="package")
def sidecar_server(stack: SidecarStack) -> ServerUnderFuzz:
    return ServerUnderFuzz("sidecar", stack.sidecar.process, stack.sidecar.admin_address)
