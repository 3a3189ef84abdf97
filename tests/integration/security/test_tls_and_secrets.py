"""Security end to end, with real processes and a test CA: TLS and mTLS on the sidecar's
listener and admin API and between the sidecar and the event log, the event log's bearer token
through the shipper, the admin API kept on loopback without TLS, and secrets that never reach
a log line or an error.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar.v1 import admin_pb2, admin_pb2_grpc, eventlog_pb2
from tests.integration.eventlog._server import EventLogProcess
from tests.integration.events._support import (
    CallLoop,
    sample,
    sidecar_config,
    transitions,
    wait_until,
)
from tests.support.certs import Issued, Pki
from tests.support.procs import SIDECAR_BIN, free_port
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.integration

TOKEN = "evergreen-token-7f3a9c01d2"
WRONG_TOKEN = "not-the-token-55e1b0aa"
CALL_TIMEOUT_S = 5.0


class _Certs:
    def __init__(self, folder: Path) -> None:
        self.pki = Pki(folder / "ca")
        self.server = self.pki.issue("server")
        self.client = self.pki.issue("client", client=True)
        self.rogue = Pki(folder / "rogue", name="someone else's CA")
        self.rogue_client = self.rogue.issue("rogue-client", client=True)

    def server_tls(self, *, mtls: bool) -> dict[str, str]:
        tls = {"cert_file": str(self.server.cert), "key_file": str(self.server.key)}
        if mtls:
            tls["client_ca_file"] = str(self.pki.ca_cert)
        return tls

    def client_credentials(self, client: Issued | None = None,
                           ca: Path | None = None) -> grpc.ChannelCredentials:
        root = (ca or self.pki.ca_cert).read_bytes()
        if client is None:
            return grpc.ssl_channel_credentials(root)
        cert, key = client.read()
        return grpc.ssl_channel_credentials(root, key, cert)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> _Certs:
    return _Certs(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamProcess]:
    with UpstreamProcess(tmp_path_factory.mktemp("upstream")) as process:
        process.configure("flap.Svc", code="UNAVAILABLE", failure_ratio=0.5)
        yield process


def _echo(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    channel = (grpc.insecure_channel(address) if credentials is None
               else grpc.secure_channel(address, credentials))
    with channel:
        try:
            reply = channel.unary_unary("/echo.Svc/Unary")(b"hello", timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as error:
            return error.code()
    assert reply == b"hello"
    return grpc.StatusCode.OK


def test_the_proxy_listener_serves_tls_and_with_a_client_ca_requires_client_certificates(
        tmp_path: Path, certs: _Certs, upstream: UpstreamProcess) -> None:
    outcomes: dict[str, dict[str, grpc.StatusCode]] = {}
    for mode in ("tls", "mtls"):
        config = {"upstreams": {"echo": {"address": upstream.address, "routes": ["/echo."]}},
                  "listen_tls": certs.server_tls(mtls=mode == "mtls")}
        with SidecarProcess(tmp_path, config, name=mode) as sidecar:
            address = sidecar.address
            outcomes[mode] = {
                "client certificate": _echo(address, certs.client_credentials(certs.client)),
                "no client certificate": _echo(address, certs.client_credentials()),
                "plaintext": _echo(address, None),
                "rogue CA client": _echo(address, certs.client_credentials(
                    certs.rogue_client)),
                "server not trusted": _echo(address, certs.client_credentials(
                    certs.client, ca=certs.rogue.ca_cert)),
            }
    ok, refused = grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE
    assert outcomes["tls"] == {"client certificate": ok, "no client certificate": ok,
                               "plaintext": refused, "rogue CA client": ok,
                               "server not trusted": refused}
    assert outcomes["mtls"] == {"client certificate": ok, "no client certificate": refused,
                                "plaintext": refused, "rogue CA client": refused,
                                "server not trusted": refused}


def test_the_admin_api_beyond_loopback_needs_tls_and_then_serves_only_trusted_clients(
        tmp_path: Path, certs: _Certs, upstream: UpstreamProcess) -> None:
    port = free_port()
    config = {"service": "secure", "admin_listen": f"0.0.0.0:{port}",
              "upstreams": {"echo": {"address": upstream.address, "routes": ["/echo."]}}}
    refused = tmp_path / "refused.yaml"
    refused.write_text(yaml.safe_dump({**config, "listen": f"127.0.0.1:{free_port()}"}))
    done = subprocess.run([SIDECAR_BIN, "proxy", "--config", str(refused)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"admin_listen: 0.0.0.0:{port} is reachable from other hosts" in done.stderr

    config["admin_tls"] = certs.server_tls(mtls=True)
    with SidecarProcess(tmp_path, config):
        def list_breakers(credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
            target = f"127.0.0.1:{port}"
            channel = (grpc.insecure_channel(target) if credentials is None
                       else grpc.secure_channel(target, credentials))
            with channel:
                try:
                    reply = admin_pb2_grpc.SidecarAdminStub(channel).ListBreakers(  # type: ignore[no-untyped-call]
                        admin_pb2.ListBreakersRequest(), timeout=CALL_TIMEOUT_S)
                except grpc.RpcError as error:
                    return error.code()
                assert [b.name for b in reply.breakers] == ["echo"]
                health = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
                assert health.status == health_pb2.HealthCheckResponse.SERVING
                return grpc.StatusCode.OK

        with_cert = list_breakers(certs.client_credentials(certs.client))
        without_cert = list_breakers(certs.client_credentials())
        plaintext = list_breakers(None)
    assert with_cert is grpc.StatusCode.OK
    assert without_cert is grpc.StatusCode.UNAVAILABLE
    assert plaintext is grpc.StatusCode.UNAVAILABLE


def _secure_eventlog(workdir: Path, certs: _Certs) -> EventLogProcess:
    token_file = workdir / "eventlog-token"
    token_file.write_text(TOKEN + "\n")
    cert, key = certs.client.read()
    return EventLogProcess(
        workdir, "--token-file", str(token_file), "--reads-require-token",
        "--tls-cert", str(certs.server.cert), "--tls-key", str(certs.server.key),
        "--tls-client-ca", str(certs.pki.ca_cert), token=TOKEN,
        credentials=grpc.ssl_channel_credentials(certs.pki.ca_cert.read_bytes(), key, cert))


def _shipping_config(upstream: UpstreamProcess, log: EventLogProcess, certs: _Certs,
                     outbox: Path) -> dict[str, object]:
    config = sidecar_config(upstream.address, log.address, outbox)
    config["eventlog"]["tls"] = {
        "ca_file": str(certs.pki.ca_cert), "cert_file": str(certs.client.cert),
        "key_file": str(certs.client.key)}
    return config


def test_the_shipper_delivers_over_mtls_with_the_token_and_no_log_line_holds_the_token(
        tmp_path: Path, certs: _Certs, upstream: UpstreamProcess) -> None:
    (tmp_path / "log").mkdir()
    token_file = tmp_path / "sidecar-token"
    token_file.write_text(TOKEN)
    with _secure_eventlog(tmp_path / "log", certs) as log:
        config = _shipping_config(upstream, log, certs, tmp_path / "outbox.db")
        with SidecarProcess(tmp_path, config,
                            env={"SIDECAR_EVENTLOG_TOKEN_FILE": str(token_file)}) as sidecar:
            with CallLoop(sidecar):
                wait_until(lambda: sample(sidecar, "sidecar_events_shipped_total") >= 10,
                           "events shipped over mTLS with the token")
            shipped = sample(sidecar, "sidecar_events_shipped_total")
            counted = transitions(sidecar)
            sidecar_log = sidecar.process.output()
        page = log.stub.ReadAll(eventlog_pb2.ReadAllRequest(), timeout=10,
                                metadata=log.metadata())
        eventlog_log = log.output()
    assert shipped >= 10 and counted > 0
    assert len(page.events) >= 10
    assert TOKEN not in sidecar_log and TOKEN not in eventlog_log


def test_a_wrong_token_is_refused_stores_nothing_and_appears_in_no_log(
        tmp_path: Path, certs: _Certs, upstream: UpstreamProcess) -> None:
    (tmp_path / "log").mkdir()
    with _secure_eventlog(tmp_path / "log", certs) as log:
        config = _shipping_config(upstream, log, certs, tmp_path / "outbox.db")
        with SidecarProcess(tmp_path, config,
                            env={"SIDECAR_EVENTLOG_TOKEN": WRONG_TOKEN}) as sidecar:
            with CallLoop(sidecar):
                wait_until(lambda: sample(sidecar, "sidecar_events_ship_failures_total",
                                          code="UNAUTHENTICATED") >= 2,
                           "Appends refused for the wrong token")
            pending = sample(sidecar, "sidecar_outbox_pending_events")
            sidecar_log = sidecar.process.output()
        head = log.head()
        eventlog_log = log.output()
    assert head == 0, "nothing is stored for a caller with the wrong token"
    assert pending > 0, "the refused events wait in the outbox, not dropped"
    assert "UNAUTHENTICATED" in sidecar_log  # refused loudly...
    for secret in (TOKEN, WRONG_TOKEN):  # ...without showing either token
        assert secret not in sidecar_log and secret not in eventlog_log
