"""Child processes of ``sidecar demo``: started in their own process groups, always stopped.

Each child runs in a new session (its own process group), so a Ctrl-C in the terminal reaches
only the demo, which then stops the children in order (SIGTERM to the whole group, SIGKILL
after a grace period). On Linux each child also asks the kernel for SIGTERM when the demo dies
(``PR_SET_PDEATHSIG``), so even a demo killed with SIGKILL leaves no process behind.

Blocking calls (``start``'s readiness wait, ``stop``) are meant for the demo's main thread
or a worker thread, never for an event loop's thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Final

DEFAULT_STOP_GRACE_S: Final = 8.0
"""How long a child gets to exit after SIGTERM before SIGKILL (the sidecar drains calls and
flushes its outbox within this)."""
DEFAULT_START_TIMEOUT_S: Final = 30.0
_PR_SET_PDEATHSIG: Final = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def pick_port(preferred: int, host: str = "127.0.0.1") -> int:
    """``preferred`` when it is free on ``host``, else any free port."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise OSError(f"no free port on {host}")


class ChildError(RuntimeError):
    """A child exited or never became ready; the message ends with the tail of its log."""


class Child:
    """One child process; output goes to ``log_path``."""

    def __init__(self, name: str, args: Sequence[str], log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # closed in stop()
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.popen = subprocess.Popen(
            self.args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=full_env, start_new_session=True, preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 15) -> str:
        self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_for_port(self, port: int, timeout_s: float = DEFAULT_START_TIMEOUT_S,
                      host: str = "127.0.0.1") -> None:
        """Block until ``host:port`` accepts connections; :class:`ChildError` if the child
        exits first or the time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise ChildError(f"{self.name} exited with status {self.popen.returncode}:\n"
                                 f"{self.log_tail()}")
            try:
                with socket.create_connection((host, port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise ChildError(f"{self.name} did not listen on {host}:{port} within {timeout_s:g}s:\n"
                         f"{self.log_tail()}")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace_s: float = DEFAULT_STOP_GRACE_S) -> int | None:
        """SIGTERM the child's process group, SIGKILL it after ``grace_s``; return the exit
        status (None if it had to be killed)."""
        status: int | None = self.popen.poll()
        if status is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                status = self.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                status = None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # anything left in the group
        if self.popen.poll() is None:
            self.popen.wait(timeout=5.0)
        self._log.close()
        return status


class Children:
    """The demo's children, stopped in reverse start order (the sidecar before the event log
    it ships to, the event log before nothing depends on it)."""

    def __init__(self) -> None:
        self._children: list[Child] = []

    def start(self, name: str, args: Sequence[str], log_path: Path,
              env: dict[str, str] | None = None) -> Child:
        child = Child(name, args, log_path, env)
        self._children.append(child)
        return child

    def __iter__(self) -> Iterator[Child]:
        return iter(self._children)

    def dead(self) -> list[Child]:
        return [c for c in self._children if not c.alive()]

    def stop_all(self, grace_s: float = DEFAULT_STOP_GRACE_S) -> dict[str, int | None]:
        statuses = {}
        while self._children:
            child = self._children.pop()
            statuses[child.name] = child.stop(grace_s)
        return statuses
