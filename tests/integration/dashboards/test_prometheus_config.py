"""The Prometheus configs in deploy/ pass `promtool check config` (Debian's promtool)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.integration.dashboards.k8s_pods import ROOT, fake_pod
from tests.support.procs import require_binary
from tests.support.prometheus import static_from_kubernetes

pytestmark = pytest.mark.integration


def _promtool_check(path: Path) -> subprocess.CompletedProcess[str]:
    promtool = require_binary("promtool")
    return subprocess.run([promtool, "check", "config", str(path)], capture_output=True,
                          text=True, timeout=60)


def test_local_prometheus_config_passes_promtool() -> None:
    result = _promtool_check(ROOT / "deploy" / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_kubernetes_prometheus_config_passes_promtool_with_static_discovery(
        tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "k8s" / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == {"evergreen-sidecar", "evergreen-eventlog"}
    assert all("kubernetes_sd_configs" in job for job in config["scrape_configs"])
    pods = [fake_pod("checkout", "checkout-1"), fake_pod("eventlog", "eventlog-0")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(static_from_kubernetes(config, pods, 15.0)))
    result = _promtool_check(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_prometheus_config_the_demo_writes_passes_promtool(tmp_path: Path) -> None:
    from sidecar.demo._system import Ports, prometheus_config

    ports = Ports(upstream=50051, listen=15001, admin=15000, metrics=9464, eventlog=7070,
                  eventlog_metrics=9465)
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(prometheus_config(ports)))
    result = _promtool_check(path)
    assert result.returncode == 0, result.stdout + result.stderr
    local = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    # with the default ports, the demo's config scrapes what deploy/prometheus.yml scrapes
    assert ([job["static_configs"] for job in local["scrape_configs"]]
            == [job["static_configs"] for job in prometheus_config(ports)["scrape_configs"]])
