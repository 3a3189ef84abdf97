"""``sidecar events query`` against an event log serving TLS: the same ``--tls-*`` options as
the admin clients (``sidecar.dial.ClientTls``), ``--tls-server-name`` included."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from tests.integration.eventlog._server import EventLogProcess
from tests.integration.eventlog.test_cli import sidecar
from tests.support.certs import Pki
from tests.support.events import StreamFactory

pytestmark = pytest.mark.integration


def test_events_query_over_tls_checks_the_server_name_it_is_given(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    server_cert = pki.issue("eventlog")
    trust = grpc.ssl_channel_credentials(root_certificates=pki.ca_cert.read_bytes())
    with EventLogProcess(tmp_path, "--tls-cert", str(server_cert.cert), "--tls-key",
                         str(server_cert.key), credentials=trust) as server:
        server.append(StreamFactory("clitls", "pod-1").transitions(2))
        query = ("events", "query", "--eventlog", server.address, "--service", "clitls",
                 "--timeout-s", "5")

        trusted = sidecar(*query, "--tls-ca", str(pki.ca_cert))
        named = sidecar(*query, "--tls-ca", str(pki.ca_cert), "--tls-server-name", "localhost")
        wrong_name = sidecar(*query, "--tls-ca", str(pki.ca_cert),
                             "--tls-server-name", "other.invalid")
        plaintext = sidecar(*query)

    for ok in (trusted, named):
        assert ok.returncode == 0, ok.stderr
        assert [json.loads(line)["version"] for line in ok.stdout.splitlines()] == [1, 2]
    for refused in (wrong_name, plaintext):
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert server.address in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
