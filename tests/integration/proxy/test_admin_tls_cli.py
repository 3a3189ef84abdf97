"""`sidecar breakers` and `sidecar health` against a real sidecar whose admin API requires mTLS
(`admin_tls` with a client CA), through the CLI as an operator runs them."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.certs import Pki
from tests.support.procs import SIDECAR_BIN
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.integration

CLI_TIMEOUT_S = 30.0


class _Pki:
    def __init__(self, folder: Path) -> None:
        self.ca = Pki(folder / "ca")
        self.server = self.ca.issue("admin-server")
        self.client = self.ca.issue("operator", client=True)

    def client_args(self) -> list[str]:
        return ["--tls-ca", str(self.ca.ca_cert), "--tls-cert", str(self.client.cert),
                "--tls-key", str(self.client.key)]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> _Pki:
    return _Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, upstream: UpstreamProcess,
            pki: _Pki) -> Iterator[SidecarProcess]:
    config = {
        "upstreams": {"orders": {"address": upstream.address, "routes": ["/orders."]}},
        "admin_tls": {"cert_file": str(pki.server.cert), "key_file": str(pki.server.key),
                      "client_ca_file": str(pki.ca.ca_cert)},
    }
    with SidecarProcess(tmp_path_factory.mktemp("sidecar"), config) as process:
        yield process


def _sidecar(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SIDECAR_BIN, *args], capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S)


def test_breakers_lists_over_mtls_with_the_ca_and_a_client_certificate(
        sidecar: SidecarProcess, pki: _Pki) -> None:
    result = _sidecar("breakers", "--admin", sidecar.admin_address, "--output", "json",
                      *pki.client_args())
    assert result.returncode == 0, result.stderr
    assert [row["name"] for row in json.loads(result.stdout)] == ["orders"]


def test_breakers_finds_address_and_tls_in_the_sidecars_config(
        sidecar: SidecarProcess, pki: _Pki) -> None:
    result = _sidecar("breakers", "--config", str(sidecar.config_path), *pki.client_args())
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].split()[0] == "orders"


def test_breakers_without_tls_options_fails_with_a_hint(sidecar: SidecarProcess) -> None:
    result = _sidecar("breakers", "--admin", sidecar.admin_address, "--timeout", "2")
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr and "--tls-ca" in result.stderr


def test_breakers_from_a_config_requiring_client_certificates_asks_for_one(
        sidecar: SidecarProcess, pki: _Pki) -> None:
    result = _sidecar("breakers", "--config", str(sidecar.config_path),
                      "--tls-ca", str(pki.ca.ca_cert))
    assert result.returncode == 2
    assert "--tls-cert and --tls-key" in result.stderr


def test_an_unreadable_tls_file_is_named_and_is_a_usage_error(
        sidecar: SidecarProcess, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    result = _sidecar("breakers", "--admin", sidecar.admin_address, "--tls-ca", str(missing))
    assert result.returncode == 2
    assert "--tls.ca_file" in result.stderr and str(missing) in result.stderr


def test_health_reports_serving_over_mtls_and_fails_without_a_client_certificate(
        sidecar: SidecarProcess, pki: _Pki) -> None:
    served = _sidecar("health", "--addr", sidecar.admin_address, *pki.client_args())
    assert served.returncode == 0, served.stderr
    assert "SERVING" in served.stdout
    from_config = _sidecar("health", "--config", str(sidecar.config_path), *pki.client_args())
    assert from_config.returncode == 0, from_config.stderr
    refused = _sidecar("health", "--addr", sidecar.admin_address, "--timeout-s", "2",
                       "--tls-ca", str(pki.ca.ca_cert))
    assert refused.returncode == 1
    assert "UNAVAILABLE" in refused.stderr
