"""``/metrics`` over TLS (sidecar ``metrics_tls``, event log ``--metrics-tls-cert/-key``),
scraped by a real Prometheus with ``scheme: https``, and no ``*_created`` series on either."""

from __future__ import annotations

import ssl
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.eventlog._server import EventLogProcess
from tests.support.certs import Pki
from tests.support.prometheus import PrometheusServer
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def _get(url: str, ca: Path, accept: str | None = None) -> tuple[str, str]:
    """(content type, body) of an HTTPS GET that trusts only ``ca``."""
    context = ssl.create_default_context(cafile=str(ca))
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=10, context=context) as reply:
        return reply.headers["Content-Type"], reply.read().decode()


def _wait_https(url: str, ca: Path, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _get(url, ca)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def sidecar(tmp_path: Path, pki: Pki, upstream: UpstreamProcess) -> Iterator[SidecarProcess]:
    issued = pki.issue("sidecar-metrics")
    config = {
        "service": "checkout",
        "metrics_tls": {"cert_file": str(issued.cert), "key_file": str(issued.key)},
        "upstreams": {"pay": {"address": upstream.address, "routes": ["/pay."]}},
    }
    with SidecarProcess(tmp_path, config) as process:
        yield process


@pytest.fixture
def eventlog(tmp_path: Path, pki: Pki) -> Iterator[EventLogProcess]:
    issued = pki.issue("eventlog-metrics")
    workdir = tmp_path / "eventlog"
    workdir.mkdir()
    process = EventLogProcess(workdir, "--metrics-tls-cert", str(issued.cert),
                              "--metrics-tls-key", str(issued.key))
    try:
        yield process
    finally:
        process.close()


def _assert_no_created(body: str) -> None:
    created = [line for line in body.splitlines()
               if not line.startswith("#") and "_created" in line.split("{")[0].split(" ")[0]]
    assert created == []


def test_both_serve_metrics_over_tls_without_created_series_and_with_openmetrics(
        sidecar: SidecarProcess, eventlog: EventLogProcess, pki: Pki) -> None:
    sidecar_url = f"https://localhost:{sidecar.config['metrics_listen'].rsplit(':', 1)[1]}/metrics"
    eventlog_url = f"https://localhost:{eventlog.metrics_port}/metrics"
    for url, family in ((sidecar_url, "sidecar_requests"), (eventlog_url, "eventlog_duplicates")):
        _wait_https(url, pki.ca_cert)
        text_type, text = _get(url, pki.ca_cert)
        assert text_type.startswith("text/plain")
        assert f"# TYPE {family}_total counter" in text or f"# TYPE {family} counter" in text
        _assert_no_created(text)
        om_type, om = _get(url, pki.ca_cert, accept=OPENMETRICS)
        assert om_type.startswith("application/openmetrics-text")
        assert om.rstrip().endswith("# EOF")
        _assert_no_created(om)
        with pytest.raises(OSError):  # plain HTTP is not served any more
            urllib.request.urlopen(url.replace("https://", "http://"), timeout=5).read()


def test_prometheus_scrapes_both_over_https(tmp_path: Path, sidecar: SidecarProcess,
                                            eventlog: EventLogProcess, pki: Pki) -> None:
    sidecar_port = sidecar.config["metrics_listen"].rsplit(":", 1)[1]
    tls = {"ca_file": str(pki.ca_cert), "server_name": "localhost"}
    config = {
        "global": {"scrape_interval": "500ms", "scrape_timeout": "500ms"},
        "scrape_configs": [
            {"job_name": "sidecar", "scheme": "https", "tls_config": tls,
             "static_configs": [{"targets": [f"127.0.0.1:{sidecar_port}"]}]},
            {"job_name": "eventlog", "scheme": "https", "tls_config": tls,
             "static_configs": [{"targets": [f"127.0.0.1:{eventlog.metrics_port}"]}]},
        ],
    }
    with PrometheusServer(config, tmp_path / "prometheus") as prometheus:
        targets = prometheus.wait_for_targets_up(2, timeout_s=30.0)
        assert {t["scrapeUrl"].split(":")[0] for t in targets} == {"https"}
        deadline = time.monotonic() + 20.0
        while True:
            rows = prometheus.api("query", query='sidecar_breaker_state{upstream="pay"}'
                                  ' or eventlog_head_position')
            if {r["metric"]["job"] for r in rows["result"]} == {"sidecar", "eventlog"}:
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.3)
        created = prometheus.api("query", query='{__name__=~".+_created"}')
        assert created["result"] == []


def test_half_a_metrics_tls_pair_or_a_bad_key_is_refused_naming_it(tmp_path: Path,
                                                                   pki: Pki) -> None:
    import subprocess

    from tests.support.procs import SIDECAR_BIN, free_port

    issued, other = pki.issue("half"), pki.issue("other")
    base = [SIDECAR_BIN, "eventlog", "serve", "--store", f"sqlite:///{tmp_path / 'e.db'}",
            "--listen", f"127.0.0.1:{free_port()}", "--metrics-listen", f"127.0.0.1:{free_port()}"]
    half = subprocess.run([*base, "--metrics-tls-cert", str(issued.cert)],
                          capture_output=True, text=True, timeout=30)
    assert half.returncode == 2
    assert "--metrics-tls-cert and --metrics-tls-key go together" in half.stderr
    mismatched = subprocess.run([*base, "--metrics-tls-cert", str(issued.cert),
                                 "--metrics-tls-key", str(other.key)],
                                capture_output=True, text=True, timeout=30)
    assert mismatched.returncode == 2 and "Traceback" not in mismatched.stderr
    assert f"metrics tls: {issued.cert} / {other.key}" in mismatched.stderr
