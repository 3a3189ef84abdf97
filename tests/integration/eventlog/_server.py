"""Start a real ``sidecar eventlog serve`` process for integration tests, and talk to it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar.eventlog.api.auth import bearer_metadata
from sidecar.v1 import eventlog_pb2, eventlog_pb2_grpc, events_pb2
from tests.support.events import to_proto
from tests.support.procs import SIDECAR_BIN, ManagedProcess, free_port, require_binary

READY_TIMEOUT_S = 20.0


class EventLogProcess:
    """``sidecar eventlog serve`` on free ports with its store in ``workdir``.

    ``restart()`` starts a new process on the same ports and store (after ``kill()``).
    """

    def __init__(self, workdir: Path, *extra_args: str, env: dict[str, str] | None = None,
                 token: str | None = None,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        require_binary("sidecar")
        self.workdir = workdir
        self.db = workdir / "events.db"
        self.store_url = f"sqlite:///{self.db}"
        self.port = free_port()
        self.metrics_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.extra_args = list(extra_args)
        self.env = env
        self.token = token
        self.credentials = credentials
        self._starts = 0
        self.proc: ManagedProcess | None = None
        self.start()

    def args(self) -> list[str]:
        return [
            SIDECAR_BIN, "eventlog", "serve", "--store", self.store_url,
            "--listen", self.address, "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
            *self.extra_args,
        ]

    def start(self) -> None:
        self._starts += 1
        log_path = self.workdir / f"server-{self._starts}.log"
        self.proc = ManagedProcess(self.args(), log_path, env=self.env)
        self.channel = (
            grpc.insecure_channel(self.address)
            if self.credentials is None
            else grpc.secure_channel(self.address, self.credentials)
        )
        self.stub = eventlog_pb2_grpc.EventLogStub(self.channel)
        self.wait_healthy()

    def wait_healthy(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until grpc.health.v1 says SERVING (the port alone opens before projections load)."""
        assert self.proc is not None
        health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.proc.poll() is not None:
                raise RuntimeError(f"event log exited early:\n{self.proc.output()}")
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"event log not serving:\n{self.proc.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        return self.proc.output() if self.proc is not None else ""

    def metadata(self) -> list[tuple[str, str]]:
        return bearer_metadata(self.token)

    def append(self, events: Sequence[object], timeout_s: float = 10.0
               ) -> eventlog_pb2.AppendResponse:
        """Append records (NewEvent) or wire events; raises grpc.RpcError as the server says."""
        wire = [e if isinstance(e, events_pb2.Event) else to_proto(e) for e in events]  # type: ignore[arg-type]
        return self.stub.Append(
            eventlog_pb2.AppendRequest(events=wire), timeout=timeout_s, metadata=self.metadata()
        )

    def head(self) -> int:
        page = self.stub.ReadAll(
            eventlog_pb2.ReadAllRequest(from_position=1 << 62, limit=1), timeout=10.0,
            metadata=self.metadata(),
        )
        return int(page.head_position)

    def kill(self) -> None:
        self.channel.close()
        if self.proc is not None:
            self.proc.kill()
            self.proc.close()

    def restart(self) -> None:
        self.start()

    def close(self) -> None:
        self.channel.close()
        if self.proc is not None:
            self.proc.close()

    def __enter__(self) -> EventLogProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
