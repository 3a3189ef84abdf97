"""Shared by the benchmarks: the server processes of a run, and what /proc says about them.

Every benchmark starts its servers (echo servers, proxies, sidecars through their CLI) as
processes of their own on free ports of 127.0.0.1 and judges a proxy by the CPU time and
memory the kernel accounts to its process, so these pieces live here once.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SIDECAR_BIN = str(Path(sys.executable).with_name("sidecar"))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


def stat_cpu_s(stat: Path) -> float:
    """User + system CPU seconds from a /proc ``stat`` file (a process's or a thread's)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    return stat_cpu_s(Path(f"/proc/{pid}/stat"))


def thread_cpu_s(pid: int) -> dict[int, float]:
    """User + system CPU seconds of each thread of a process, by thread id (the main thread's
    id is ``pid``), from /proc; threads that end while being read are left out."""
    seconds: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            seconds[int(task.name)] = stat_cpu_s(task / "stat")
        except (FileNotFoundError, ProcessLookupError):
            continue
    return seconds


def children(pid: int) -> list[int]:
    """The pids of a process's children (e.g. nginx's worker under its master), from /proc."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [int(field) for field in text.split()]


def rss_kb(pid: int) -> int:
    """A process's resident set size (``VmRSS`` of /proc/PID/status), kB; 0 once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def load_average() -> str:
    """The machine's load averages over 1, 5 and 15 minutes (/proc/loadavg), as one string."""
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def sidecar_config(listen: int, admin: str, metrics: int, upstreams: dict[str, Any],
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config a benchmark's sidecar runs with (listening on 127.0.0.1, logging at
    WARNING): these ``upstreams`` and ``extra`` top-level keys."""
    return {
        "service": "bench", "instance": "bench",
        "listen": f"127.0.0.1:{listen}",
        "admin_listen": admin,
        "metrics_listen": f"127.0.0.1:{metrics}",
        "logging": {"level": "WARNING"},
        "upstreams": upstreams,
        **(extra or {}),
    }


class Processes:
    """Server processes of one run, each on a free port of 127.0.0.1; stopped by ``close``.

    ``ports`` and ``pids`` map a name to the port the client calls and the pid whose CPU is
    measured (see :func:`run_cell`); ``admin`` maps a sidecar's name to its admin address.
    Other benchmarks (``benchmarks/endpoints.py``) start their own set with :meth:`start` and
    :meth:`start_sidecar`.
    """

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        self.ports: dict[str, int] = {}
        self.pids: dict[str, int] = {}
        self.admin: dict[str, str] = {}  # a sidecar's name: its admin_listen address

    def start(self, name: str, args: list[str], port: int | None = None,
              env: dict[str, str] | None = None) -> int:
        """Start ``args`` (with ``--port N`` appended when ``port`` is None), wait until it
        listens; its port."""
        if port is None:
            port = free_port()
            args = [*args, "--port", str(port)]
        proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **(env or {})},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._procs.append(proc)
        wait_for_port(port, proc)
        self.pids[name] = proc.pid
        return port

    def start_sidecar(self, name: str, workdir: Path, upstreams: dict[str, Any],
                      extra: dict[str, Any] | None = None,
                      env: dict[str, str] | None = None, launcher: Sequence[str] = ()) -> int:
        """``sidecar proxy`` through its CLI with these ``upstreams`` (and ``extra`` top-level
        config keys), logging at WARNING; the port it listens on (also ``ports[name]``).
        ``launcher`` goes before the command (e.g. ``python -m cProfile -o FILE``)."""
        listen = free_port()
        self.admin[name] = f"127.0.0.1:{free_port()}"
        config = sidecar_config(listen, self.admin[name], free_port(), upstreams, extra)
        path = workdir / f"sidecar-{len(self._procs)}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.start(name, [*launcher, SIDECAR_BIN, "proxy", "--config", str(path)], port=listen,
                   env=env)
        self.ports[name] = listen
        return listen

    def close(self) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
