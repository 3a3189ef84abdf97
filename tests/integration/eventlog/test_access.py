"""Access control: bearer token for Append (and optionally reads), TLS and mTLS."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar.eventlog.api.auth import bearer_metadata
from sidecar.v1 import eventlog_pb2, eventlog_pb2_grpc
from tests.integration.eventlog._server import EventLogProcess
from tests.support.events import StreamFactory, to_proto
from tests.support.procs import require_binary

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token-0123456789"


def _append_request(service: str) -> eventlog_pb2.AppendRequest:
    return eventlog_pb2.AppendRequest(
        events=[to_proto(e) for e in StreamFactory(service, "pod-1").transitions(2)]
    )


def test_append_without_the_token_is_unauthenticated_and_stores_nothing(
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with EventLogProcess(tmp_path, "--token-file", str(token_file)) as server:
        refusals = {}
        for name, metadata in {
            "no token": [],
            "wrong token": bearer_metadata("not-the-token"),
            "not bearer": [("authorization", f"Basic {TOKEN}")],
        }.items():
            with pytest.raises(grpc.RpcError) as caught:
                server.stub.Append(_append_request("guarded"), metadata=metadata, timeout=10)
            refusals[name] = caught.value.code()
        head_after_refusals = server.head()  # reads stay open by default

        accepted = server.stub.Append(
            _append_request("guarded"), metadata=bearer_metadata(TOKEN), timeout=10
        )
        output = server.output()

    assert set(refusals.values()) == {grpc.StatusCode.UNAUTHENTICATED}
    assert head_after_refusals == 0
    assert [r.global_position for r in accepted.results] == [1, 2]
    assert TOKEN not in output


def test_reads_need_the_token_when_configured_but_health_does_not(tmp_path: Path) -> None:
    with EventLogProcess(
        tmp_path, "--reads-require-token", env={"SIDECAR_EVENTLOG_TOKEN": TOKEN}
    ) as server:
        with pytest.raises(grpc.RpcError) as caught:
            server.stub.ReadAll(eventlog_pb2.ReadAllRequest(), timeout=10)
        with pytest.raises(grpc.RpcError) as caught_subscribe:
            next(iter(server.stub.Subscribe(eventlog_pb2.SubscribeRequest(), timeout=10)))
        allowed = server.stub.ReadAll(
            eventlog_pb2.ReadAllRequest(), metadata=bearer_metadata(TOKEN), timeout=10
        )
        health = health_pb2_grpc.HealthStub(server.channel).Check(
            health_pb2.HealthCheckRequest(service="sidecar.v1.EventLog"), timeout=10
        )

    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "ReadAll" in caught.value.details()
    assert caught_subscribe.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert allowed.head_position == 0
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_pki(directory: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
             "-subj", "/CN=eventlog-test-ca", cwd=directory)
    for name, extensions in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ):
        (directory / f"{name}.ext").write_text(extensions)
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN=eventlog-test-{name}", cwd=directory)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "1",
                 "-extfile", f"{name}.ext", cwd=directory)


def test_mtls_server_serves_clients_with_a_certificate_and_refuses_others(
    tmp_path: Path,
) -> None:
    require_binary("openssl")
    pki = tmp_path / "pki"
    pki.mkdir()
    _make_pki(pki)
    ca = (pki / "ca.pem").read_bytes()
    with_cert = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=(pki / "client.key").read_bytes(),
        certificate_chain=(pki / "client.pem").read_bytes(),
    )
    tls_args = ("--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
                "--tls-client-ca", str(pki / "ca.pem"))
    with EventLogProcess(tmp_path, *tls_args, credentials=with_cert) as server:
        accepted = server.stub.Append(_append_request("tls"), timeout=10)
        refused = {}
        for name, channel in {
            "no client certificate": grpc.secure_channel(
                server.address, grpc.ssl_channel_credentials(root_certificates=ca)
            ),
            "plaintext": grpc.insecure_channel(server.address),
        }.items():
            with channel, pytest.raises(grpc.RpcError) as caught:
                eventlog_pb2_grpc.EventLogStub(channel).ReadAll(
                    eventlog_pb2.ReadAllRequest(), timeout=5
                )
            refused[name] = caught.value.code()

    assert [r.global_position for r in accepted.results] == [1, 2]
    assert set(refused.values()) == {grpc.StatusCode.UNAVAILABLE}


def test_batch_length_and_message_size_limits_are_enforced(tmp_path: Path) -> None:
    with EventLogProcess(
        tmp_path, "--max-batch-events", "5", "--max-message-bytes", "4096"
    ) as server:
        producer = StreamFactory("limits", "pod-1")
        with pytest.raises(grpc.RpcError) as too_many:
            server.append(producer.transitions(6))
        too_many_head = server.head()
        with pytest.raises(grpc.RpcError) as too_big:
            request = eventlog_pb2.AppendRequest(
                events=[to_proto(e) for e in StreamFactory("limits", "pod-2").transitions(5)]
            )
            request.events[0].breaker_transitioned.reason = "x" * 5000
            server.stub.Append(request, timeout=10)
        within = server.append(StreamFactory("limits", "pod-3").transitions(5))

    assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "more than the limit of 5" in too_many.value.details()
    assert too_many_head == 0
    assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(within.results) == 5
