"""TLS settings: the admin API stays on loopback unless TLS is configured for it, certificate
files are checked when the config is read (errors name the key and the path, never the
content), and credentials build from the files a test CA issued."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.config import ConfigError, parse_config
from sidecar.tls import TlsFileError, channel_credentials, is_loopback, server_credentials
from tests.support.certs import Pki

BASE = "service: x\nupstreams: {p: {address: '127.0.0.1:1', routes: [/a]}}\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("[::1]", True), ("::1", True),
    ("localhost", True), ("LOCALHOST", True), ("0.0.0.0", False), ("[::]", False),
    ("", False), ("10.0.0.5", False), ("sidecar.example", False),
])
def test_is_loopback_knows_which_hosts_stay_on_this_machine(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("admin", ["0.0.0.0:15000", "'[::]:15000'", "10.0.0.5:15000",
                                   "sidecar.example:15000"])
def test_an_admin_listener_beyond_loopback_without_tls_is_refused_naming_admin_listen(
        admin: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(BASE + f"admin_listen: {admin}\n", env={})
    (problem,) = refused.value.problems
    assert problem.startswith("admin_listen: ")
    assert "admin_tls" in problem


def test_an_admin_listener_beyond_loopback_with_tls_is_accepted(pki: Pki) -> None:
    server = pki.issue("admin")
    config = parse_config(
        BASE + f"admin_listen: 0.0.0.0:15000\nadmin_tls: {{cert_file: {server.cert}, "
        f"key_file: {server.key}, client_ca_file: {pki.ca_cert}}}\n", env={})
    assert config.admin_tls is not None and config.admin_tls.client_ca_file == str(pki.ca_cert)


def test_unreadable_or_non_pem_files_are_refused_naming_the_key_and_path(
        tmp_path: Path, pki: Pki) -> None:
    secret = tmp_path / "not-pem.txt"
    secret.write_text("s3cret-token-value\n")
    with pytest.raises(ConfigError) as refused:
        parse_config(BASE + f"listen_tls: {{cert_file: {tmp_path}/missing.pem, "
                     f"key_file: {secret}}}\n", env={})
    problems = refused.value.problems
    assert problems[0] == f"listen_tls.cert_file: cannot read '{tmp_path}/missing.pem': " \
                          "No such file or directory"
    assert problems[1] == f"listen_tls.key_file: '{secret}' holds no PEM data"
    assert "s3cret" not in str(refused.value)


def test_a_client_certificate_without_its_key_is_refused(pki: Pki) -> None:
    client = pki.issue("client", client=True)
    with pytest.raises(ConfigError) as refused:
        parse_config(BASE + f"eventlog: {{address: '127.0.0.1:2', tls: {{ca_file: {pki.ca_cert}, "
                     f"cert_file: {client.cert}}}}}\n", env={})
    assert refused.value.problems == [
        "eventlog.tls: cert_file and key_file go together (a client certificate)"]


def test_credentials_build_from_the_configured_files(pki: Pki) -> None:
    server, client = pki.issue("server"), pki.issue("client", client=True)
    assert server_credentials(server.cert, server.key, pki.ca_cert, key="listen_tls")
    assert channel_credentials(pki.ca_cert, client.cert, client.key, key="eventlog.tls")
    with pytest.raises(TlsFileError, match=r"^eventlog.tls: cert_file and key_file go together"):
        channel_credentials(pki.ca_cert, client.cert, None, key="eventlog.tls")
