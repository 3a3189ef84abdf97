"""Start ``sidecar proxy`` through its CLI in its own process, for integration tests.

Example::

    with SidecarProcess(tmp_path, {"service": "t", "upstreams": {...}}) as sidecar:
        channel = grpc.aio.insecure_channel(sidecar.address)
        ...
        sidecar.breaker("payments").state == events_pb2.BREAKER_STATE_OPEN
"""

from __future__ import annotations

import copy
import signal
import time
from pathlib import Path
from typing import Any

import grpc
import yaml

from sidecar.v1 import admin_pb2, admin_pb2_grpc
from tests.support.procs import SIDECAR_BIN, ManagedProcess, free_port, wait_for_port


class SidecarProcess:
    """``sidecar proxy --config FILE`` with free ports filled in for ``listen``,
    ``admin_listen`` and ``metrics_listen`` (unless the config sets them)."""

    def __init__(self, tmp_path: Path, config: dict[str, Any], *, name: str = "sidecar",
                 env: dict[str, str] | None = None,
                 admin_credentials: grpc.ChannelCredentials | None = None) -> None:
        self.config = copy.deepcopy(config)
        for key in ("listen", "admin_listen", "metrics_listen"):
            self.config.setdefault(key, f"127.0.0.1:{free_port()}")
        self.config.setdefault("service", "test")
        self.config.setdefault("instance", name)
        self.address: str = self.config["listen"]
        self.admin_address: str = self.config["admin_listen"]
        self.config_path = tmp_path / f"{name}.yaml"
        self.write_config(self.config)
        self.process = ManagedProcess([SIDECAR_BIN, "proxy", "--config", str(self.config_path)],
                                      tmp_path / f"{name}.log", env=env)
        try:
            wait_for_port(int(self.address.rsplit(":", 1)[1]), proc=self.process.proc)
            wait_for_port(int(self.admin_address.rsplit(":", 1)[1]), proc=self.process.proc)
        except Exception:
            print(self.process.output())
            self.process.close()
            raise
        self._admin_channel = (  # TLS admin (admin_tls): pass the test CA's credentials
            grpc.insecure_channel(self.admin_address) if admin_credentials is None
            else grpc.secure_channel(self.admin_address, admin_credentials))
        self.admin = admin_pb2_grpc.SidecarAdminStub(self._admin_channel)

    def write_config(self, config: dict[str, Any] | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        self.config_path.write_text(text)

    def reload(self, config: dict[str, Any] | str) -> None:
        """Write a new config file and send SIGHUP."""
        self.write_config(config)
        self.process.signal(signal.SIGHUP)

    def breaker(self, name: str) -> admin_pb2.BreakerInfo:
        return self.admin.GetBreaker(admin_pb2.GetBreakerRequest(name=name), timeout=5)

    def wait_for_log(self, text: str, timeout_s: float = 10.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            output = self.process.output()
            if text in output:
                return output
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged within {timeout_s}s:\n{self.process.output()}")

    def close(self) -> None:
        self._admin_channel.close()
        self.process.close()

    def __enter__(self) -> SidecarProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
