"""Where an upstream's endpoints come from at run time: DNS (every A/AAAA record of a name, e.g.
a Kubernetes headless service) or a file (one ``HOST:PORT`` a line), kept current by
:class:`Discovery`.

Why this shape: a source makes one attempt and says what it saw (:meth:`EndpointSource.resolve`),
so it is easy to test against a real resolver or file; :class:`Discovery` owns the policy that
docs/endpoints.md makes a contract: a failed refresh keeps the last good set (it is counted and
logged, never raised), an empty set is a real answer (calls then fail fast), and only a
*changed* set is handed on, so the upstream emits ``EndpointsChanged`` only when something changed.

Threading: everything here runs on the proxy's event loop, and no method may be called from
another thread (from one, use ``loop.call_soon_threadsafe(discovery.refresh_now)``). Nothing
blocks the loop: file reads run in a worker thread (:func:`asyncio.to_thread`), the system
resolver runs in the loop's default executor, and queries to a given resolver are asyncio UDP.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import Final, Protocol

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

__all__ = ["Discovery", "DiscoveryError", "DnsSource", "EndpointSource", "FileSource"]

_log = logging.getLogger("sidecar.discovery")

DEFAULT_DNS_TIMEOUT_S: Final = 2.0
"""How long one DNS attempt (A and AAAA, in parallel) may take before it counts as failed."""
WARN_EVERY_S: Final = 60.0
"""At most one failure warning per source this often; the next one says how many it hid."""
MAX_FILE_BYTES: Final = 1 << 20
"""A larger endpoints file is refused (a mistake, e.g. the wrong path, not a list of peers)."""


class DiscoveryError(Exception):
    """One attempt failed. The message is one line naming the source and the problem; it is
    what gets logged (never a traceback)."""


class EndpointSource(Protocol):
    """One place endpoints come from. ``describe`` names it in logs and errors."""

    kind: str
    describe: str
    interval_s: float

    async def resolve(self) -> tuple[str, ...] | None:
        """One attempt: the current endpoints, sorted, deduplicated, as ``HOST:PORT`` strings
        (IPv6 as ``[addr]:port``); None when nothing changed since the last successful call;
        raises :class:`DiscoveryError` when the attempt failed."""
        ...


def endpoint(host: str, port: int) -> str:
    """``HOST:PORT``, with an IPv6 address in brackets (compressed form)."""
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"{host}:{port}"
    return f"[{ip.compressed}]:{port}" if ip.version == 6 else f"{host}:{port}"


def _normalized(endpoints: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(endpoints)))


class DnsSource:
    """Every A and AAAA record of ``host`` is an endpoint on ``port``.

    Without ``resolver`` the system resolver answers (``getaddrinfo``: search domains and
    ``/etc/hosts`` apply, as for any process in the pod); it cannot tell "no records" from "no
    such name", so both are failures there. With ``resolver`` (an IP, or a name the system
    resolves), that DNS server is asked over UDP (TCP when the answer is truncated) for ``host``
    as an absolute name: NXDOMAIN, SERVFAIL, REFUSED, a timeout or no answer fail the attempt;
    NOERROR with no records is the empty set.
    """

    kind = "dns"

    def __init__(self, host: str, port: int, interval_s: float,
                 resolver: tuple[str, int] | None = None,
                 timeout_s: float = DEFAULT_DNS_TIMEOUT_S) -> None:
        self.host = host.strip("[]")
        self.port = port
        self.interval_s = interval_s
        self.resolver = None if resolver is None else (resolver[0].strip("[]"), resolver[1])
        self.timeout_s = timeout_s
        via = "the system resolver" if self.resolver is None else endpoint(*self.resolver)
        self.describe = f"dns {endpoint(self.host, port)} via {via}"
        self._lookup: asyncio.Future[list[str]] | None = None

    def _error(self, problem: str) -> DiscoveryError:
        return DiscoveryError(f"{self.describe}: {problem}")

    async def resolve(self) -> tuple[str, ...]:
        with contextlib.suppress(ValueError):  # an IP literal is its own only record
            return (endpoint(str(ipaddress.ip_address(self.host)), self.port),)
        if self.resolver is None:
            return await self._system()
        queries: list[asyncio.Task[list[str]]] = []
        try:
            async with asyncio.timeout(self.timeout_s):
                where = await self._resolver_ip()
                queries = [asyncio.create_task(self._query(where, rdtype))
                           for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)]
                answers = await asyncio.gather(*queries)
        except TimeoutError:
            raise self._error(f"no answer within {self.timeout_s:g}s") from None
        except OSError as exc:  # e.g. ICMP port unreachable: nothing listens there
            raise self._error(f"resolver unreachable ({exc.strerror or exc})") from None
        finally:
            for query in queries:  # one failed: the other's answer cannot change the outcome
                query.cancel()
        return _normalized(endpoint(addr, self.port) for addrs in answers for addr in addrs)

    async def _query(self, where: str, rdtype: dns.rdatatype.RdataType) -> list[str]:
        assert self.resolver is not None
        query = dns.message.make_query(self.host, rdtype, use_edns=0, payload=1232)
        try:
            response, _ = await dns.asyncquery.udp_with_fallback(
                query, where, timeout=self.timeout_s, port=self.resolver[1],
                ignore_unexpected=True)
        except dns.exception.Timeout:
            raise TimeoutError from None
        except dns.exception.DNSException as exc:
            raise self._error(f"bad answer to {rdtype.name}: {exc}") from None
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            raise self._error(f"{dns.rcode.to_text(rcode)} for {rdtype.name}")
        # Every record of the type in the answer (a CNAME chain ends in the records we want).
        return [rdata.to_text() for rrset in response.answer if rrset.rdtype == rdtype
                for rdata in rrset]

    async def _resolver_ip(self) -> str:
        assert self.resolver is not None
        host, port = self.resolver
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(host))
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port,
                                                                 type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise self._error(f"cannot resolve the resolver {host!r} ({exc.strerror})") from None
        return str(infos[0][4][0])

    async def _system(self) -> tuple[str, ...]:
        # getaddrinfo runs in an executor thread that cannot be cancelled: on a timeout the
        # lookup is left running and no second one starts until it returns (no thread pile-up).
        if self._lookup is not None and not self._lookup.done():
            raise self._error("the previous lookup has not returned yet")
        self._lookup = asyncio.get_running_loop().run_in_executor(None, self._getaddrinfo)
        try:
            addresses = await asyncio.wait_for(asyncio.shield(self._lookup), self.timeout_s)
        except TimeoutError:
            raise self._error(f"no answer within {self.timeout_s:g}s") from None
        except socket.gaierror as exc:
            raise self._error(exc.strerror or str(exc)) from None
        return _normalized(endpoint(address, self.port) for address in addresses)

    def _getaddrinfo(self) -> list[str]:
        """The A and AAAA addresses of ``host`` from the system resolver. Executor thread."""
        infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        return [str(info[4][0]) for info in infos
                if info[0] in (socket.AF_INET, socket.AF_INET6)]


def parse_endpoints(text: str, where: str) -> tuple[str, ...]:
    """The endpoints in an endpoints file's text: one ``HOST:PORT`` a line, ``#`` starts a
    comment, blank lines ignored. :class:`DiscoveryError` naming ``where``, the line and the
    problem on the first bad line (nothing of a bad file is used)."""
    found: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        host, sep, port = line.rpartition(":")
        if (not sep or not host or not port.isdigit() or not 0 < int(port) < 65536
                or any(ch.isspace() for ch in line) or host in ("[", "[]")):
            raise DiscoveryError(f"{where}: line {number}: expected HOST:PORT with a port from "
                                 f"1 to 65535, got {line[:80]!r}")
        found.append(endpoint(host, int(port)))
    return _normalized(found)


class FileSource:
    """The endpoints listed in ``path`` (see :func:`parse_endpoints`).

    The file is re-read only when its ``(st_mtime_ns, st_size, st_ino)`` changed since the last
    good read, so polling is one ``fstat``; replacing it by rename (as Kubernetes updates a
    mounted ConfigMap) or editing it in place both count. Two same-size writes within one
    timestamp tick of the filesystem are seen as one. Reading runs in a worker thread.
    """

    kind = "file"

    def __init__(self, path: str, interval_s: float) -> None:
        self.path = path
        self.interval_s = interval_s
        self.describe = f"file {path}"
        self._seen: tuple[int, int, int] | None = None

    async def resolve(self) -> tuple[str, ...] | None:
        signature, text = await asyncio.to_thread(self._read, self._seen)
        if text is None:
            return None
        endpoints = parse_endpoints(text, self.describe)
        self._seen = signature
        return endpoints

    def _read(self, seen: tuple[int, int, int] | None) -> tuple[tuple[int, int, int], str | None]:
        """(signature, text), text None when the signature is ``seen``. Worker thread only."""
        try:
            with open(self.path, "rb") as handle:
                st = os.fstat(handle.fileno())
                signature = (st.st_mtime_ns, st.st_size, st.st_ino)
                if signature == seen:
                    return signature, None
                if st.st_size > MAX_FILE_BYTES:
                    raise DiscoveryError(f"{self.describe}: larger than {MAX_FILE_BYTES} bytes")
                data = handle.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            raise DiscoveryError(f"{self.describe}: no such file") from None
        except OSError as exc:
            raise DiscoveryError(f"{self.describe}: cannot read ({exc.strerror or exc})") from None
        try:
            return signature, data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise DiscoveryError(f"{self.describe}: line {line}: not UTF-8") from None


class Discovery:
    """Runs one source: resolves at once, then every ``interval_s`` (counted from the end of the
    previous attempt, so a slow resolver is never asked twice at a time), and hands each NEW
    good set to ``apply`` (only when it differs from the last one applied). A failure keeps the
    last good set, is counted (``refresh_failures``) and logged (logger ``sidecar.discovery``,
    at most one warning per source per :data:`WARN_EVERY_S` with the count since; info when it
    recovers), never raised.

    ``refreshes`` counts good attempts (changed or not), ``refresh_failures`` failed ones.
    ``clock`` (monotonic) only paces the warnings; waiting uses the loop's time.
    Loop thread only (see the module docstring); ``apply`` is called on the loop.
    """

    def __init__(self, upstream: str, source: EndpointSource,
                 apply: Callable[[tuple[str, ...]], None], *,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.upstream = upstream
        self.source = source
        self._apply = apply
        self._clock = clock
        self._wall_clock = wall_clock
        self.refreshes = 0
        self.refresh_failures = 0
        self.last_error: str | None = None
        self.last_success_wall: float | None = None
        self.endpoints: tuple[str, ...] | None = None
        """The set last handed to ``apply`` (None: none yet)."""
        self._attempted = False
        self._failing = 0  # failures in a row
        self._hidden = 0  # failures since the last warning
        self._warned_at: float | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def failing(self) -> bool:
        """Whether the latest attempt failed (``last_error`` then says why; after a good
        attempt it is history, not the reason for the current set)."""
        return self._failing > 0

    @property
    def running(self) -> bool:
        """Whether the background loop is running."""
        return self._task is not None and not self._task.done()

    async def first(self, timeout_s: float) -> bool:
        """Run the first attempt, for at most ``timeout_s`` (the proxy awaits it at start so
        calls do not fail needlessly before endpoints are known). True if a set was applied."""
        try:
            async with asyncio.timeout(timeout_s):
                return await self._attempt()
        except TimeoutError:
            self._failed(f"{self.source.describe}: no result within {timeout_s:g}s")
            return False

    def start(self) -> None:
        """Start the background loop on the running loop (a no-op while it runs)."""
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"discovery {self.upstream}")

    async def stop(self) -> None:
        """Stop the background loop and wait for it (an attempt in flight is cancelled)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def refresh_now(self) -> None:
        """Make the loop attempt now instead of at the end of its interval."""
        self._wake.set()

    async def _run(self) -> None:
        if not self._attempted:
            await self._attempt()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.source.interval_s):
                    await self._wake.wait()
            self._wake.clear()
            await self._attempt()

    async def _attempt(self) -> bool:
        """One attempt; True if a new set was applied. Never raises (but CancelledError)."""
        self._attempted = True
        try:
            found = await self.source.resolve()
        except DiscoveryError as exc:
            self._failed(str(exc))
            return False
        except Exception as exc:  # a source's bug or an unforeseen library error: still no crash
            self._failed(f"{self.source.describe}: unexpected {type(exc).__name__}: {exc}")
            return False
        self.refreshes += 1
        self.last_success_wall = self._wall_clock()
        if self._failing:
            _log.info("discovery for upstream %s recovered after %d failed attempts (%s)",
                      self.upstream, self._failing, self.source.describe)
            self._failing = 0
        if found is None or found == self.endpoints:
            return False
        try:
            self._apply(found)
        except Exception:  # a bug in the caller, not a discovery failure: keep its traceback
            _log.exception("upstream %s: applying %d endpoints failed", self.upstream, len(found))
            return False
        self.endpoints = found
        _log.info("upstream %s: %d endpoints from %s", self.upstream, len(found),
                  self.source.describe)
        return True

    def _failed(self, message: str) -> None:
        self.refresh_failures += 1
        self.last_error = message
        self._failing += 1
        self._hidden += 1
        now = self._clock()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY_S:
            kept = "no endpoints yet" if self.endpoints is None else \
                f"keeping the last {len(self.endpoints)} endpoints"
            _log.warning("discovery for upstream %s failed: %s; %s (%d failed attempts since "
                         "the last warning, %d in all)", self.upstream, message, kept,
                         self._hidden, self.refresh_failures)
            self._warned_at = now
            self._hidden = 0
