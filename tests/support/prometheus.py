"""A real Prometheus (Debian's ``prometheus`` package) for integration tests.

``PrometheusServer`` starts the binary on a free port with a config written into a temp folder,
waits until it is ready and answers PromQL through the HTTP API. ``static_from_kubernetes``
turns ``deploy/k8s/prometheus.yml`` into a config this Prometheus can run: Debian builds
Prometheus without Kubernetes discovery, so each ``kubernetes_sd_configs`` is replaced by static
targets that carry the ``__meta_kubernetes_*`` labels Kubernetes discovery would set; the
job's relabelling then runs unchanged.
"""

from __future__ import annotations

import copy
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from tests.support.procs import ManagedProcess, free_port, require_binary, wait_for_port

READY_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class FakePod:
    """What Kubernetes discovery would report for one pod port (only the labels used)."""

    address: str  # HOST (the pod IP); the port comes from the prometheus.io/port annotation
    name: str
    namespace: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    def meta_labels(self) -> dict[str, str]:
        def clean(key: str) -> str:
            return "".join(c if c.isalnum() else "_" for c in key)

        labels = {
            "__meta_kubernetes_pod_name": self.name,
            "__meta_kubernetes_namespace": self.namespace,
        }
        for key, value in self.labels.items():
            labels[f"__meta_kubernetes_pod_label_{clean(key)}"] = value
        for key, value in self.annotations.items():
            labels[f"__meta_kubernetes_pod_annotation_{clean(key)}"] = value
        return labels


def static_from_kubernetes(config: Mapping[str, Any], pods: Sequence[FakePod],
                           scrape_interval_s: float) -> dict[str, Any]:
    """``config`` with every job's Kubernetes discovery replaced by ``pods`` as static targets
    (each job's own relabel rules decide which pods it keeps) and a short scrape interval."""
    result = copy.deepcopy(dict(config))
    interval = f"{round(scrape_interval_s * 1000)}ms"
    result["global"] = {**result.get("global", {}), "scrape_interval": interval,
                        "scrape_timeout": interval, "evaluation_interval": interval}
    for job in result["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["static_configs"] = [
                {"targets": [pod.address], "labels": pod.meta_labels()} for pod in pods
            ]
    return result


class PrometheusServer:
    """Debian's Prometheus on 127.0.0.1:<free port>, stopped on close.

    Started with exemplar storage on (the latency panel's exemplars) and a short lookback so a
    series that stops disappears quickly.
    """

    def __init__(self, config: Mapping[str, Any], workdir: Path) -> None:
        binary = require_binary("prometheus")
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = ManagedProcess(
            [binary, f"--config.file={self.config_path}",
             f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--enable-feature=exemplar-storage", "--log.level=warn"],
            workdir / "prometheus.log",
        )
        try:
            wait_for_port(self.port, READY_TIMEOUT_S, self.process.proc)
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"prometheus not ready:\n{self.process.output()[-2000:]}")

    def api(self, path: str, **params: str | float) -> Any:
        """GET ``/api/v1/<path>``; returns ``data`` or raises with Prometheus' error text."""
        query = urllib.parse.urlencode({k: str(v) for k, v in params.items()})
        url = f"{self.url}/api/v1/{path}?{query}"
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as reply:
                body = json.load(reply)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self.api("targets", state="active")["activeTargets"]
        return active

    def wait_for_targets_up(self, count: int, timeout_s: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        targets: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            targets = self.targets()
            if len(targets) == count and all(t["health"] == "up" for t in targets):
                return targets
            time.sleep(0.2)
        raise AssertionError(f"expected {count} healthy targets, got {json.dumps(targets)}")

    def close(self) -> None:
        self.process.close()

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
