"""A small authoritative DNS server over UDP on loopback that a test controls, for DNS discovery.

It answers A and AAAA questions from the records a test sets, and can be switched, at run time
and from any thread, to fail every query with an rcode or to drop every query (the client then
times out). Unknown names get NXDOMAIN; a name set with no addresses gets NOERROR and an empty
answer.

Threading: the server runs in a daemon thread on a blocking socket; the public methods take a
lock and are safe from any thread (including an asyncio test's loop: none of them blocks).
A switch applies to every query received after it returns.

Example::

    with DnsServer() as server:
        server.set_records("orders.svc", ["127.0.0.1", "::1"])
        source = DnsSource("orders.svc", 50051, 0.1, resolver=server.address)
        server.fail("SERVFAIL")
        assert server.queries >= 2
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Final, Literal

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

__all__ = ["DnsServer"]

POLL_S: Final = 0.05
"""How often the serving thread checks whether it should stop."""
TTL_S: Final = 1

FailRcode = Literal["SERVFAIL", "NXDOMAIN", "REFUSED"]


class DnsServer:
    """UDP DNS server on ``host`` and a free port (``address``); a context manager."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, 0))
        self._sock.settimeout(POLL_S)
        self.address: tuple[str, int] = (host, self._sock.getsockname()[1])
        self._lock = threading.Lock()
        self._records: dict[dns.name.Name, list[str]] = {}
        self._mode: Literal["serve", "fail", "drop"] = "serve"
        self._rcode = dns.rcode.SERVFAIL
        self._queries: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)

    # --- control (any thread) -----------------------------------------------------------

    def set_records(self, name: str, addresses: Iterable[str]) -> None:
        """``name``'s A (IPv4) and AAAA (IPv6) records; an empty list: NOERROR, no records."""
        checked = [str(ipaddress.ip_address(a)) for a in addresses]  # ValueError on a typo
        with self._lock:
            self._records[dns.name.from_text(name)] = checked

    def remove(self, name: str) -> None:
        """``name`` no longer exists (NXDOMAIN)."""
        with self._lock:
            self._records.pop(dns.name.from_text(name), None)

    def fail(self, rcode: FailRcode = "SERVFAIL") -> None:
        """Answer every query with ``rcode`` and no records."""
        with self._lock:
            self._mode, self._rcode = "fail", dns.rcode.from_text(rcode)

    def drop(self) -> None:
        """Read every query and never answer (the client times out)."""
        with self._lock:
            self._mode = "drop"

    def serve(self) -> None:
        """Answer from the records again."""
        with self._lock:
            self._mode = "serve"

    @property
    def queries(self) -> int:
        """How many queries arrived (answered or not)."""
        with self._lock:
            return len(self._queries)

    def questions(self) -> list[tuple[str, str]]:
        """Every question received, in order: (name, type), e.g. ("orders.svc.", "AAAA")."""
        with self._lock:
            return list(self._queries)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> DnsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- serving thread -----------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self._sock.recvfrom(65_535)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(wire)
            except dns.exception.DNSException:
                continue
            reply = self._answer(query)
            if reply is not None:
                try:
                    self._sock.sendto(reply, peer)
                except OSError:
                    pass

    def _answer(self, query: dns.message.Message) -> bytes | None:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        with self._lock:
            for question in query.question:
                self._queries.append((question.name.to_text(),
                                      dns.rdatatype.to_text(question.rdtype)))
            if self._mode == "drop":
                return None
            if self._mode == "fail":
                response.set_rcode(self._rcode)
                return response.to_wire()
            for question in query.question:
                addresses = self._records.get(question.name)
                if addresses is None:
                    response.set_rcode(dns.rcode.NXDOMAIN)
                    continue
                version = {dns.rdatatype.A: 4, dns.rdatatype.AAAA: 6}.get(question.rdtype)
                matching = [a for a in addresses if ipaddress.ip_address(a).version == version]
                if matching:
                    response.answer.append(dns.rrset.from_text_list(
                        question.name, TTL_S, dns.rdataclass.IN, question.rdtype, matching))
        return response.to_wire()
