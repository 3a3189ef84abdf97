"""Random bytes at every listening port of a running sidecar and event log: the proxy listener,
the admin API, both Prometheus endpoints and the event log's gRPC port.

Payloads: plain random bytes; the HTTP/2 client preface followed by random frames (so gRPC's
frame parser sees them, not just its preface check); an HTTP/1.1 request line with random
headers; a truncated TLS ClientHello. Each connection is half-closed after sending and must be
closed by the server soon after (no connection left hanging). Then every server still runs,
answers SERVING, serves /metrics, and the proxy still forwards a call.
"""

from __future__ import annotations

import socket
import time
import urllib.request
from collections import Counter

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz._checks import ServerUnderFuzz
from tests.fuzz.conftest import SidecarStack
from tests.integration.eventlog._server import EventLogProcess

pytestmark = pytest.mark.integration

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
TLS_CLIENT_HELLO_START = bytes.fromhex("160301020001000200")
CLOSE_WAIT_S = 5.0
"""How long a server may keep a connection open after the client sent its bytes and FIN."""

IDLE_CONNECTIONS = 20
"""Half-open connections per port in the slowloris test. prometheus_client's HTTP server
accepts about a dozen idle connections at once; beyond that connects wait for SYN retries
(1 s, 2 s...), which only makes the test slow (see docs/reliability.md)."""

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _frames() -> st.SearchStrategy[bytes]:
    """HTTP/2 frames with random type, flags, stream id and payload (length field honest)."""
    def frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
        return (len(payload).to_bytes(3, "big") + bytes([kind, flags])
                + stream_id.to_bytes(4, "big") + payload)

    return st.builds(frame, st.integers(0, 12), st.integers(0, 255), st.integers(0, 2**31 - 1),
                     st.binary(max_size=64))


_payloads = st.one_of(
    st.binary(min_size=1, max_size=1024),
    st.lists(_frames(), min_size=1, max_size=6).map(lambda fs: HTTP2_PREFACE + b"".join(fs)),
    st.binary(max_size=200).map(lambda junk: HTTP2_PREFACE + junk),
    st.binary(max_size=200).map(lambda junk: b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + junk),
    st.binary(max_size=100).map(lambda junk: TLS_CLIENT_HELLO_START + junk),
)


def _throw(port: int, payload: bytes) -> float:
    """Send ``payload`` and FIN; return how long the server took to close its side."""
    with socket.create_connection(("127.0.0.1", port), timeout=CLOSE_WAIT_S) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return 0.0  # the server already hung up: fine
        started = time.monotonic()
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        except TimeoutError:
            raise AssertionError(
                f"port {port} kept the connection open {CLOSE_WAIT_S}s after "
                f"{payload[:60]!r}") from None
        return time.monotonic() - started


def _metrics_ok(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return bool(reply.status == 200)


def test_random_bytes_at_every_listening_port_leave_every_server_serving(
        stack: SidecarStack, eventlog: EventLogProcess, sidecar_server: ServerUnderFuzz,
        eventlog_server: ServerUnderFuzz) -> None:
    ports = {
        "proxy listen": stack.proxy_port,
        "admin": stack.admin_port,
        "sidecar metrics": stack.metrics_port,
        "eventlog grpc": eventlog.port,
        "eventlog metrics": eventlog.metrics_port,
    }
    sent: Counter[str] = Counter()
    slowest_close_s = 0.0
    started = time.monotonic()

    @FUZZ
    @given(target=st.sampled_from(sorted(ports)), payload=_payloads)
    def fuzz(target: str, payload: bytes) -> None:
        nonlocal slowest_close_s
        slowest_close_s = max(slowest_close_s, _throw(ports[target], payload))
        sent[target] += 1

    fuzz()
    print(f"\nFUZZ ports: {sum(sent.values())} connections in "
          f"{time.monotonic() - started:.1f} s, {dict(sent)}, slowest close "
          f"{slowest_close_s * 1000:.0f} ms")
    for server in (sidecar_server, eventlog_server):
        server.assert_alive_and_serving()
        server.assert_no_traceback_logged()
    assert _metrics_ok(stack.metrics_port) and _metrics_ok(eventlog.metrics_port)
    with grpc.insecure_channel(stack.sidecar.address) as channel:
        assert channel.unary_unary("/fuzz.Echo/Unary")(b"still here", timeout=5) == b"still here"


def test_many_half_open_connections_do_not_stop_the_servers_from_answering(
        stack: SidecarStack, eventlog: EventLogProcess, sidecar_server: ServerUnderFuzz,
        eventlog_server: ServerUnderFuzz) -> None:
    """Slowloris: IDLE_CONNECTIONS per port that send a few bytes and then nothing."""
    ports = [stack.proxy_port, stack.admin_port, stack.metrics_port, eventlog.port,
             eventlog.metrics_port]
    idle: list[socket.socket] = []
    try:
        for port in ports:
            for i in range(IDLE_CONNECTIONS):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall((HTTP2_PREFACE, b"GET /metr", b"\x16\x03")[i % 3])
                idle.append(sock)
        for server in (sidecar_server, eventlog_server):
            server.assert_alive_and_serving()
        assert _metrics_ok(stack.metrics_port) and _metrics_ok(eventlog.metrics_port)
        with grpc.insecure_channel(stack.sidecar.address) as channel:
            assert channel.unary_unary("/fuzz.Echo/Unary")(b"x", timeout=5) == b"x"
    finally:
        for sock in idle:
            sock.close()


_path_text = st.text(st.characters(codec="ascii", min_codepoint=0x21, max_codepoint=0x7E),
                     min_size=1, max_size=60)
_metadata_keys = st.from_regex(r"[a-z0-9][a-z0-9\-_.]{0,30}", fullmatch=True).filter(
    lambda k: not k.startswith("grpc-") and k not in {"te", "content-type", "user-agent"})
_metadata_values = st.text(st.characters(codec="ascii", min_codepoint=0x20, max_codepoint=0x7E),
                           max_size=100)


def test_random_method_paths_and_metadata_through_the_proxy_get_clear_answers(
        stack: SidecarStack, sidecar_server: ServerUnderFuzz) -> None:
    """Any method path: routed ones (``/fuzz.*``) reach the upstream, others are UNIMPLEMENTED
    naming the method; random metadata never breaks a call."""
    codes: Counter[str] = Counter()
    with grpc.insecure_channel(stack.sidecar.address) as channel:

        @FUZZ
        @given(service=_path_text.filter(lambda s: "/" not in s), routed=st.booleans(),
               metadata=st.lists(st.tuples(_metadata_keys, _metadata_values), max_size=5),
               payload=st.binary(max_size=256))
        def fuzz(service: str, routed: bool, metadata: list[tuple[str, str]],
                 payload: bytes) -> None:
            method = f"/fuzz.{service}/Unary" if routed else f"/{service}/Unary"
            try:
                reply = channel.unary_unary(method)(payload, metadata=metadata, timeout=5)
            except grpc.RpcError as error:
                codes[error.code().name] += 1
                assert error.code() is grpc.StatusCode.UNIMPLEMENTED, (
                    f"{method}: {error.code().name}: {error.details()}")
                assert not method.startswith("/fuzz."), f"a routed method was refused: {method}"
                assert "no route for method" in str(error.details())  # names it (repr)
                return
            codes["OK"] += 1
            assert method.startswith("/fuzz.") and reply == payload

        fuzz()
    print(f"\nFUZZ proxy paths+metadata: {sum(codes.values())} calls, {dict(codes)}")
    sidecar_server.assert_alive_and_serving()
    sidecar_server.assert_no_traceback_logged()
