"""Helpers for the event pipeline's end-to-end tests: a sidecar config that flaps a breaker
quickly, a thread that keeps calling through the sidecar, /metrics scraping and the CLI query."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.support.procs import SIDECAR_BIN
from tests.support.sidecar import SidecarProcess

SERVICE = "checkout"
INSTANCE = "pod-1"
STREAM = f"{SERVICE}/{INSTANCE}"
FLAPPING = "/flap.Svc/Unary"
"""Every second call fails (UNAVAILABLE); with the breaker below that is a transition every
few calls: trip, 50 ms open, a probe that succeeds or fails, and so on."""
HEALTHY = "/healthy.Svc/Unary"
FLAP_BREAKER = {"window": {"type": "count", "size": 4}, "minimum_calls": 4,
                "consecutive_failures": 1, "half_open_probes": 1,
                "open": {"base_ms": 50, "max_ms": 50, "jitter": 0}}
FAST_SHIPPER = {"flush_interval_ms": 100, "append_timeout_ms": 1000,
                "backoff": {"base_ms": 50, "max_ms": 300}}
WAIT_S = 20.0


def sidecar_config(upstream_address: str, eventlog_address: str, outbox: Path,
                   **eventlog: Any) -> dict[str, Any]:
    return {
        "service": SERVICE,
        "instance": INSTANCE,
        "shutdown_grace_s": 2.0,
        "upstreams": {
            "flap": {"address": upstream_address, "routes": ["/flap."],
                     "breaker": FLAP_BREAKER},
            "healthy": {"address": upstream_address, "routes": ["/healthy."]},
        },
        "eventlog": {"address": eventlog_address, "outbox_path": str(outbox),
                     **FAST_SHIPPER, **eventlog},
    }


def metrics(sidecar: SidecarProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the sidecar's /metrics: (name, sorted labels) -> value."""
    url = f"http://{sidecar.config['metrics_listen']}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def sample(sidecar: SidecarProcess, name: str, **labels: str) -> float:
    return metrics(sidecar).get((name, tuple(sorted(labels.items()))), 0.0)


def transitions(sidecar: SidecarProcess) -> int:
    """The sidecar's own count of breaker transitions (``sidecar_breaker_transitions_total``)."""
    return int(sum(value for (name, _), value in metrics(sidecar).items()
                   if name == "sidecar_breaker_transitions_total"))


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s}s")
        time.sleep(0.05)


def drained(sidecar: SidecarProcess) -> bool:
    """Nothing queued in memory and nothing left in the outbox."""
    samples = metrics(sidecar)
    return (samples.get(("sidecar_events_queued", ()), -1) == 0
            and samples.get(("sidecar_outbox_pending_events", ()), -1) == 0)


def query_events(eventlog_address: str, *args: str) -> list[dict[str, Any]]:
    """``sidecar events query --output json`` through the CLI, one dict per event."""
    result = subprocess.run(
        [SIDECAR_BIN, "events", "query", "--eventlog", eventlog_address, "--service", SERVICE,
         "--output", "json", *args],
        capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


class CallLoop:
    """A thread calling ``method`` through the sidecar every ``interval_s`` until stopped;
    counts the status codes the host got."""

    def __init__(self, sidecar: SidecarProcess, method: str = FLAPPING,
                 interval_s: float = 0.01) -> None:
        self._channel = grpc.insecure_channel(sidecar.address)
        self._call = self._channel.unary_unary(method)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.codes: dict[grpc.StatusCode, int] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._call(b"ping", timeout=5)
                code = grpc.StatusCode.OK
            except grpc.RpcError as error:
                code = error.code()  # type: ignore[attr-defined]
            self.codes[code] = self.codes.get(code, 0) + 1
            self._stop.wait(self._interval_s)

    def __enter__(self) -> CallLoop:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(10)
        self._channel.close()


def verify_store(db: Path) -> subprocess.CompletedProcess[str]:
    """``sidecar eventlog verify --store sqlite:///db`` through the CLI."""
    return subprocess.run([SIDECAR_BIN, "eventlog", "verify", "--store", f"sqlite:///{db}"],
                          capture_output=True, text=True, timeout=60, check=False)
