"""How the CLI clients pick the address and TLS settings of a sidecar's admin API."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from sidecar.config import parse_config
from sidecar.dial import ClientTls, add_tls_arguments, dial_address, resolve_admin
from sidecar.tls import TlsFileError
from tests.support.certs import Pki


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_tls_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize(("listen", "dialled"), [
    ("0.0.0.0:15000", "127.0.0.1:15000"),
    ("[::]:15000", "[::1]:15000"),
    ("127.0.0.1:15000", "127.0.0.1:15000"),
    ("sidecar.internal:15000", "sidecar.internal:15000"),
])
def test_a_wildcard_listen_address_is_dialled_on_loopback(listen: str, dialled: str) -> None:
    assert dial_address(listen) == dialled


def test_no_tls_option_means_plaintext_and_any_turns_tls_on() -> None:
    assert ClientTls.from_args(_args()) is None
    assert ClientTls.from_args(_args("--tls-ca", "ca.pem")) == ClientTls(ca_file=Path("ca.pem"))
    assert ClientTls.from_args(_args("--tls-server-name", "admin")) == ClientTls(
        server_name="admin")


def test_a_client_certificate_without_its_key_is_refused() -> None:
    with pytest.raises(TlsFileError, match="--tls-cert and --tls-key go together"):
        ClientTls.from_args(_args("--tls-cert", "client.pem"))


def _config(tmp_path: Path, admin_tls: str = "") -> str:
    return (f"service: t\nadmin_listen: 0.0.0.0:15000\n{admin_tls}"
            "upstreams: {a: {address: '127.0.0.1:1', routes: [/a.]}}\n")


def test_a_config_with_admin_tls_turns_tls_on_and_without_keeps_the_options(
        tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    server = pki.issue("server")
    tls_only = _config(tmp_path, f"admin_tls: {{cert_file: {server.cert}, "
                                 f"key_file: {server.key}}}\n")
    assert resolve_admin(parse_config(tls_only), None) == ("127.0.0.1:15000", ClientTls())
    plain = parse_config(_config(tmp_path).replace("0.0.0.0", "127.0.0.1"))
    assert resolve_admin(plain, None) == ("127.0.0.1:15000", None)


def test_a_config_requiring_client_certificates_needs_one_from_the_options(
        tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    server = pki.issue("server")
    client = pki.issue("client", client=True)
    config = parse_config(_config(tmp_path, (
        f"admin_tls: {{cert_file: {server.cert}, key_file: {server.key}, "
        f"client_ca_file: {pki.ca_cert}}}\n")))
    with pytest.raises(TlsFileError, match="requires a client certificate"):
        resolve_admin(config, ClientTls(ca_file=pki.ca_cert))
    given = ClientTls(pki.ca_cert, client.cert, client.key)
    assert resolve_admin(config, given) == ("127.0.0.1:15000", given)
