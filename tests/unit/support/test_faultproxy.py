"""The fault proxy the chaos suite relies on does what each switch promises, on real sockets."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.faultproxy import FaultProxy, Mode
from tests.support.procs import free_port

WAIT_S = 5.0
QUIET_S = 0.3  # how long "nothing arrives" is watched for


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: EchoServer = self.server  # type: ignore[assignment]
        with server.lock:
            server.connections += 1
        try:
            while data := self.request.recv(65536):
                with server.lock:
                    server.bytes_received += len(data)
                self.request.sendall(data)
        except ConnectionResetError:
            pass  # the proxy's reset switch at work


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        self.lock = threading.Lock()
        self.connections = 0
        self.bytes_received = 0

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy(echo.port) as running:
        yield running


def _connect(proxy: FaultProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=WAIT_S)


def _roundtrip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def _eventually(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def _nothing_arrives(sock: socket.socket) -> bool:
    sock.settimeout(QUIET_S)
    try:
        sock.recv(1)
    except TimeoutError:
        return True
    return False


def test_pass_through_forwards_bytes_both_ways_and_counts_them(
        proxy: FaultProxy, echo: EchoServer) -> None:
    payload = bytes(range(256)) * 1000
    with _connect(proxy) as sock:
        assert _roundtrip(sock, payload) == payload
    stats = proxy.stats()
    assert stats.mode is Mode.PASS
    assert stats.bytes_to_target == len(payload)
    assert stats.bytes_to_client == len(payload)
    assert stats.connections_accepted == 1
    assert echo.connections == 1


def test_client_half_close_reaches_the_target_and_its_close_comes_back(
        proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        assert _roundtrip(sock, b"bye") == b"bye"
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b""  # the echo server saw EOF, closed, and so did the proxy
    _eventually(lambda: proxy.stats().connections_open == 0)


def test_drop_accepts_new_connections_but_never_reaches_the_target(
        proxy: FaultProxy, echo: EchoServer) -> None:
    proxy.drop()
    with _connect(proxy) as sock:
        sock.sendall(b"x" * 100)
        _eventually(lambda: proxy.stats().bytes_dropped == 100)
        assert _nothing_arrives(sock)
    assert echo.connections == 0
    assert proxy.stats().connections_black_holed == 1


def test_drop_black_holes_open_connections_even_after_the_network_heals(
        proxy: FaultProxy, echo: EchoServer) -> None:
    with _connect(proxy) as old:
        assert _roundtrip(old, b"before") == b"before"
        proxy.drop()
        old.sendall(b"during")
        _eventually(lambda: proxy.stats().bytes_dropped == len(b"during"))
        assert _nothing_arrives(old)
        proxy.pass_through()
        old.sendall(b"after")
        _eventually(lambda: proxy.stats().bytes_dropped == len(b"duringafter"))
        assert _nothing_arrives(old)
        with _connect(proxy) as new:
            assert _roundtrip(new, b"fresh") == b"fresh"
    assert echo.bytes_received == len(b"beforefresh")


def test_delay_holds_every_chunk_for_at_least_the_delay_each_way(proxy: FaultProxy) -> None:
    proxy.delay(100)
    with _connect(proxy) as sock:
        started = time.monotonic()
        assert _roundtrip(sock, b"slow") == b"slow"
        elapsed_s = time.monotonic() - started
    assert elapsed_s >= 0.2  # a lower bound only: 100 ms to the target, 100 ms back
    assert proxy.stats().delay_ms == 100


def test_delay_keeps_the_order_of_chunks(proxy: FaultProxy) -> None:
    proxy.delay(20)
    with _connect(proxy) as sock:
        parts = [f"<{i}>".encode() for i in range(50)]
        for part in parts:
            sock.sendall(part)
        expected = b"".join(parts)
        received = b""
        while len(received) < len(expected):
            received += sock.recv(65536)
    assert received == expected


def test_reset_aborts_open_connections_with_rst(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        assert _roundtrip(sock, b"hi") == b"hi"
        proxy.reset()
        with pytest.raises(ConnectionResetError):
            sock.sendall(b"again")
            sock.recv(1)
    assert proxy.stats().connections_reset == 1


def test_reset_mode_resets_each_new_connection_at_once(
        proxy: FaultProxy, echo: EchoServer) -> None:
    proxy.reset()
    with pytest.raises(ConnectionResetError):  # on loopback the RST may beat connect()'s return
        with _connect(proxy) as sock:
            sock.recv(1)
    assert echo.connections == 0


def test_refuse_closes_the_port_and_pass_through_listens_again_on_it(
        proxy: FaultProxy) -> None:
    port = proxy.port
    proxy.refuse()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    proxy.pass_through()
    assert proxy.port == port
    with _connect(proxy) as sock:
        assert _roundtrip(sock, b"back") == b"back"


def test_a_target_that_is_down_resets_the_client_and_is_counted() -> None:
    with FaultProxy(free_port()) as proxy:
        with pytest.raises(ConnectionResetError), _connect(proxy) as sock:
            sock.recv(1)
        assert proxy.stats().target_connect_failures == 1


def test_switches_refuse_a_negative_delay(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="delay ms"):
        proxy.delay(-1)
