"""Endpoint discovery (docs/endpoints.md): a file on disk and a real UDP DNS server on loopback as
sources, and the Discovery loop's contract: a failed refresh keeps the last good set and is
counted and logged (at most one warning a minute, never a traceback), an empty set is a real
answer, and only a changed set is applied.

Real parts: files in tmp_path, :class:`tests.support.dns.DnsServer` on 127.0.0.1 with a free
port, the system resolver for ``localhost``. Short intervals; every wait is on a condition with
a wall-clock bound.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from sidecar.proxy.discovery import (
    WARN_EVERY_S,
    Discovery,
    DiscoveryError,
    DnsSource,
    EndpointSource,
    FileSource,
    parse_endpoints,
)
from tests.support.dns import DnsServer

POLL_S = 0.05
BOUND_S = 5.0
NAME = "orders.shop.svc"
LOGGER = "sidecar.discovery"


async def eventually(condition: Callable[[], bool], bound_s: float = BOUND_S) -> None:
    deadline = time.monotonic() + bound_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {bound_s}s")
        await asyncio.sleep(0.01)


class Applied:
    """The ``apply`` callback: records every set handed on."""

    def __init__(self) -> None:
        self.sets: list[tuple[str, ...]] = []

    def __call__(self, endpoints: tuple[str, ...]) -> None:
        self.sets.append(endpoints)

    @property
    def last(self) -> tuple[str, ...] | None:
        return self.sets[-1] if self.sets else None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Scripted:
    """A source whose next answers a test sets (for the loop's rules, apart from any I/O)."""

    kind = "file"
    describe = "scripted"

    def __init__(self, interval_s: float = 3600.0) -> None:
        self.interval_s = interval_s
        self.answers: list[tuple[str, ...] | Exception | None] = []
        self.calls = 0

    async def resolve(self) -> tuple[str, ...] | None:
        self.calls += 1
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, Exception):
            raise answer
        return answer


def write(path: Path, text: str) -> None:
    """Write ``text`` and give the file a new mtime even within one timestamp tick."""
    path.write_text(text, encoding="utf-8")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


@pytest.fixture
async def running() -> AsyncIterator[list[Discovery]]:
    """Discoveries a test started; stopped at the end whatever happens."""
    started: list[Discovery] = []
    yield started
    for discovery in started:
        await discovery.stop()


async def run(started: list[Discovery], source: EndpointSource, applied: Applied,
              **kwargs: Callable[[], float]) -> Discovery:
    discovery = Discovery("orders", source, applied, **kwargs)
    started.append(discovery)
    await discovery.first(BOUND_S)
    discovery.start()
    return discovery


# --- file -------------------------------------------------------------------------------


def test_parse_ignores_comments_and_blank_lines_sorts_dedups_and_brackets_ipv6() -> None:
    text = ("# orders replicas\n\n  10.0.0.8:50051  # zone b\n10.0.0.7:50051\n"
            "10.0.0.7:50051\n[::1]:50051\n::2:50051\norders-0.svc:50051\n   \n")
    assert parse_endpoints(text, "file x") == (
        "10.0.0.7:50051", "10.0.0.8:50051", "[::1]:50051", "[::2]:50051", "orders-0.svc:50051")


@pytest.mark.parametrize("line", ["10.0.0.7", "10.0.0.7:0", "10.0.0.7:65536", ":50051",
                                  "10.0.0.7:http", "10.0.0.7 10.0.0.8:1", "[]:50051"])
def test_parse_refuses_a_bad_line_naming_where_the_line_and_the_problem(line: str) -> None:
    with pytest.raises(DiscoveryError) as caught:
        parse_endpoints(f"# header\n10.0.0.8:50051\n{line}\n", "file /etc/orders.txt")
    message = str(caught.value)
    assert message.startswith("file /etc/orders.txt: line 3: expected HOST:PORT")
    assert "\n" not in message


async def test_file_edits_reach_apply_within_one_poll(tmp_path: Path,
                                                      running: list[Discovery]) -> None:
    path = tmp_path / "orders.txt"
    write(path, "10.0.0.7:50051\n# 10.0.0.9:50051\n10.0.0.8:50051\n")
    applied = Applied()
    discovery = await run(running, FileSource(str(path), POLL_S), applied)
    assert applied.sets == [("10.0.0.7:50051", "10.0.0.8:50051")]

    write(path, "10.0.0.7:50051\n10.0.0.8:50051\n10.0.0.9:50051\n")  # one added
    await eventually(lambda: applied.last == ("10.0.0.7:50051", "10.0.0.8:50051",
                                              "10.0.0.9:50051"))
    write(path, "10.0.0.9:50051\n")  # two removed
    await eventually(lambda: applied.last == ("10.0.0.9:50051",))
    assert len(applied.sets) == 3
    assert discovery.endpoints == ("10.0.0.9:50051",)
    assert discovery.refresh_failures == 0 and discovery.last_success_wall is not None


async def test_file_replaced_by_rename_is_seen(tmp_path: Path, running: list[Discovery]) -> None:
    path = tmp_path / "orders.txt"
    write(path, "10.0.0.7:50051\n")
    applied = Applied()
    await run(running, FileSource(str(path), POLL_S), applied)
    staged = tmp_path / "orders.txt.new"
    write(staged, "10.0.0.8:50051\n")  # same size, new inode: what a ConfigMap update does
    staged.replace(path)
    await eventually(lambda: applied.last == ("10.0.0.8:50051",))


async def test_unchanged_file_is_not_reread_nor_reapplied(tmp_path: Path,
                                                          running: list[Discovery]) -> None:
    path = tmp_path / "orders.txt"
    write(path, "10.0.0.7:50051\n")
    source = FileSource(str(path), POLL_S)
    assert await source.resolve() == ("10.0.0.7:50051",)
    assert await source.resolve() is None

    applied = Applied()
    discovery = await run(running, FileSource(str(path), POLL_S), applied)
    await eventually(lambda: discovery.refreshes >= 4)
    assert applied.sets == [("10.0.0.7:50051",)]
    # rewritten with the same content: read again (new mtime), same set, not applied again
    write(path, "10.0.0.7:50051\n")
    refreshes = discovery.refreshes
    await eventually(lambda: discovery.refreshes >= refreshes + 3)
    assert applied.sets == [("10.0.0.7:50051",)]


async def test_bad_line_keeps_the_last_good_set_and_counts(tmp_path: Path,
                                                           running: list[Discovery]) -> None:
    path = tmp_path / "orders.txt"
    write(path, "10.0.0.7:50051\n10.0.0.8:50051\n")
    applied = Applied()
    discovery = await run(running, FileSource(str(path), POLL_S), applied)
    write(path, "10.0.0.7:50051\n10.0.0.8:5005l\n10.0.0.9:50051\n")  # a typo on line 2
    await eventually(lambda: discovery.refresh_failures >= 1)
    assert applied.sets == [("10.0.0.7:50051", "10.0.0.8:50051")]
    assert discovery.last_error is not None
    assert discovery.last_error.startswith(f"file {path}: line 2: ")
    assert "'10.0.0.8:5005l'" in discovery.last_error
    write(path, "10.0.0.7:50051\n10.0.0.8:50051\n10.0.0.9:50051\n")  # fixed
    await eventually(lambda: applied.last == ("10.0.0.7:50051", "10.0.0.8:50051",
                                              "10.0.0.9:50051"))


async def test_deleted_file_keeps_the_last_set_until_it_is_back(
        tmp_path: Path, running: list[Discovery]) -> None:
    path = tmp_path / "orders.txt"
    write(path, "10.0.0.7:50051\n")
    applied = Applied()
    discovery = await run(running, FileSource(str(path), POLL_S), applied)
    path.unlink()
    await eventually(lambda: discovery.refresh_failures >= 2)
    assert applied.sets == [("10.0.0.7:50051",)]
    assert discovery.last_error == f"file {path}: no such file"
    write(path, "10.0.0.8:50051\n")
    await eventually(lambda: applied.last == ("10.0.0.8:50051",))


async def test_empty_file_is_the_empty_set(tmp_path: Path, running: list[Discovery]) -> None:
    path = tmp_path / "orders.txt"
    write(path, "10.0.0.7:50051\n")
    applied = Applied()
    discovery = await run(running, FileSource(str(path), POLL_S), applied)
    write(path, "")
    await eventually(lambda: applied.last == ())
    write(path, "# all replicas drained\n")
    await eventually(lambda: discovery.refreshes >= 6)
    assert applied.sets == [("10.0.0.7:50051",), ()]
    assert discovery.refresh_failures == 0


async def test_unreadable_files_fail_naming_the_path(tmp_path: Path) -> None:
    not_utf8 = tmp_path / "latin1.txt"
    not_utf8.write_bytes(b"10.0.0.7:50051\n# caf\xe9\n")
    with pytest.raises(DiscoveryError, match=rf"^file {not_utf8}: line 2: not UTF-8$"):
        await FileSource(str(not_utf8), POLL_S).resolve()
    with pytest.raises(DiscoveryError, match=rf"^file {tmp_path}: cannot read \("):
        await FileSource(str(tmp_path), POLL_S).resolve()  # a directory


# --- DNS --------------------------------------------------------------------------------


def dns_source(server: DnsServer, timeout_s: float = 0.3) -> DnsSource:
    return DnsSource(NAME, 50051, POLL_S, resolver=server.address, timeout_s=timeout_s)


async def test_dns_a_and_aaaa_records_sorted_with_ipv6_in_brackets(dns_server: DnsServer) -> None:
    dns_server.set_records(NAME, ["10.0.0.8", "2001:db8::7", "10.0.0.7", "::1"])
    source = dns_source(dns_server)
    assert source.kind == "dns"
    assert source.describe == f"dns {NAME}:50051 via 127.0.0.1:{dns_server.address[1]}"
    assert await source.resolve() == ("10.0.0.7:50051", "10.0.0.8:50051",
                                      "[2001:db8::7]:50051", "[::1]:50051")
    assert {kind for _, kind in dns_server.questions()} == {"A", "AAAA"}


async def test_dns_record_changes_reach_apply_within_one_refresh(
        dns_server: DnsServer, running: list[Discovery]) -> None:
    dns_server.set_records(NAME, ["10.0.0.7", "10.0.0.8"])
    applied = Applied()
    await run(running, dns_source(dns_server), applied)
    assert applied.sets == [("10.0.0.7:50051", "10.0.0.8:50051")]
    dns_server.set_records(NAME, ["10.0.0.8", "10.0.0.9", "::1"])
    await eventually(lambda: applied.last == ("10.0.0.8:50051", "10.0.0.9:50051",
                                              "[::1]:50051"))
    assert len(applied.sets) == 2


@pytest.mark.parametrize("failure", ["SERVFAIL", "NXDOMAIN", "REFUSED", "drop", "removed"])
async def test_dns_failures_keep_the_last_set_and_count(
        dns_server: DnsServer, running: list[Discovery], failure: str) -> None:
    dns_server.set_records(NAME, ["10.0.0.7"])
    applied = Applied()
    discovery = await run(running, dns_source(dns_server, timeout_s=0.1), applied)
    if failure == "drop":
        dns_server.drop()
    elif failure == "removed":
        dns_server.remove(NAME)
    else:
        dns_server.fail(failure)  # type: ignore[arg-type]
    await eventually(lambda: discovery.refresh_failures >= 2)
    assert applied.sets == [("10.0.0.7:50051",)]
    expected = {"drop": "no answer within 0.1s", "removed": "NXDOMAIN"}.get(failure, failure)
    assert discovery.last_error is not None and expected in discovery.last_error
    assert discovery.last_error.startswith(f"dns {NAME}:50051 via 127.0.0.1:")

    dns_server.serve()
    dns_server.set_records(NAME, ["10.0.0.7", "10.0.0.8"])
    await eventually(lambda: applied.last == ("10.0.0.7:50051", "10.0.0.8:50051"))


async def test_dns_noerror_without_records_is_the_empty_set(
        dns_server: DnsServer, running: list[Discovery]) -> None:
    dns_server.set_records(NAME, ["10.0.0.7"])
    applied = Applied()
    discovery = await run(running, dns_source(dns_server), applied)
    dns_server.set_records(NAME, [])
    await eventually(lambda: applied.last == ())
    assert discovery.refresh_failures == 0


async def test_dns_only_one_family_is_fine(dns_server: DnsServer) -> None:
    dns_server.set_records(NAME, ["::1"])
    assert await dns_source(dns_server).resolve() == ("[::1]:50051",)


async def test_dns_resolver_with_nothing_listening_fails() -> None:
    with DnsServer() as server:
        address = server.address
    source = DnsSource(NAME, 50051, POLL_S, resolver=address, timeout_s=0.2)
    with pytest.raises(DiscoveryError, match=rf"^dns {NAME}:50051 via 127\.0\.0\.1:\d+: "):
        await source.resolve()


async def test_system_resolver_answers_localhost_and_fails_an_invalid_name() -> None:
    source = DnsSource("localhost", 50051, POLL_S)
    assert source.describe == "dns localhost:50051 via the system resolver"
    found = await source.resolve()
    assert found and set(found) <= {"127.0.0.1:50051", "[::1]:50051"}
    with pytest.raises(DiscoveryError, match=r"^dns no-such-host\.invalid:50051 via the system"):
        await DnsSource("no-such-host.invalid", 50051, POLL_S, timeout_s=3.0).resolve()


# --- the Discovery loop and its logs ----------------------------------------------------


async def test_repeated_failures_log_one_warning_a_minute_and_recovery_once(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = Clock()
    source = Scripted()
    applied = Applied()
    discovery = Discovery("orders", source, applied, clock=clock)
    source.answers = [("10.0.0.7:50051",), *[DiscoveryError("scripted: SERVFAIL")] * 5]
    assert await discovery.first(1.0)
    for _ in range(5):
        assert not await discovery.first(1.0)
        clock.now += 5.0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].getMessage() == (
        "discovery for upstream orders failed: scripted: SERVFAIL; keeping the last 1 "
        "endpoints (1 failed attempts since the last warning, 1 in all)")

    clock.now += WARN_EVERY_S
    source.answers = [DiscoveryError("scripted: NXDOMAIN")]
    await discovery.first(1.0)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "scripted: NXDOMAIN" in warnings[1].getMessage()
    assert "(5 failed attempts since the last warning, 6 in all)" in warnings[1].getMessage()

    source.answers = [("10.0.0.7:50051",)]
    await discovery.first(1.0)
    recovered = [r.getMessage() for r in caplog.records if "recovered" in r.getMessage()]
    assert recovered == ["discovery for upstream orders recovered after 6 failed attempts "
                         "(scripted)"]
    assert applied.sets == [("10.0.0.7:50051",)]
    assert discovery.refresh_failures == 6 and discovery.refreshes == 2
    assert all(r.exc_info is None for r in caplog.records)
    assert "Traceback" not in caplog.text


async def test_real_failing_file_logs_one_line_without_traceback(
        tmp_path: Path, running: list[Discovery], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    path = tmp_path / "missing.txt"
    discovery = await run(running, FileSource(str(path), POLL_S), Applied())
    await eventually(lambda: discovery.refresh_failures >= 5)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].getMessage().startswith(
        f"discovery for upstream orders failed: file {path}: no such file; no endpoints yet")
    assert "\n" not in caplog.text.strip() and "Traceback" not in caplog.text


async def test_unexpected_source_errors_count_as_failures_without_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    source = Scripted()
    source.answers = [RuntimeError("boom")]
    discovery = Discovery("orders", source, Applied())
    assert not await discovery.first(1.0)
    assert discovery.last_error == "scripted: unexpected RuntimeError: boom"
    assert "Traceback" not in caplog.text


async def test_first_is_bounded_and_counts_a_slow_attempt() -> None:
    class Slow(Scripted):
        async def resolve(self) -> tuple[str, ...] | None:
            await asyncio.sleep(10)
            return None

    discovery = Discovery("orders", Slow(), Applied())
    started = time.monotonic()
    assert not await discovery.first(0.05)
    assert time.monotonic() - started < 2.0
    assert discovery.refresh_failures == 1
    assert discovery.last_error == "scripted: no result within 0.05s"


async def test_start_without_first_resolves_at_once_and_refresh_now_wakes_the_loop(
        running: list[Discovery]) -> None:
    source = Scripted(interval_s=3600.0)
    source.answers = [("10.0.0.7:50051",), ("10.0.0.8:50051",)]
    applied = Applied()
    discovery = Discovery("orders", source, applied)
    running.append(discovery)
    discovery.start()
    assert discovery.running
    await eventually(lambda: applied.sets == [("10.0.0.7:50051",)])
    discovery.refresh_now()
    await eventually(lambda: applied.last == ("10.0.0.8:50051",))
    await discovery.stop()
    assert not discovery.running
    await discovery.stop()  # idempotent


async def test_a_failing_apply_is_retried_on_the_next_good_set(
        caplog: pytest.LogCaptureFixture) -> None:
    calls: list[tuple[str, ...]] = []

    def apply(endpoints: tuple[str, ...]) -> None:
        calls.append(endpoints)
        if len(calls) == 1:
            raise ValueError("caller bug")

    source = Scripted()
    source.answers = [("10.0.0.7:50051",), ("10.0.0.7:50051",)]
    discovery = Discovery("orders", source, apply)
    assert not await discovery.first(1.0)
    assert discovery.endpoints is None
    assert await discovery.first(1.0)
    assert calls == [("10.0.0.7:50051",)] * 2
    assert "applying 1 endpoints failed" in caplog.text


async def test_dns_name_that_is_an_ip_literal_is_its_own_endpoint(dns_server: DnsServer) -> None:
    source = DnsSource("[2001:db8::1]", 50051, POLL_S, resolver=dns_server.address)
    assert await source.resolve() == ("[2001:db8::1]:50051",)
    assert dns_server.queries == 0
