"""The command line against real processes: events query/tail, eventlog verify/rebuild."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.eventlog._server import EventLogProcess
from tests.support.events import StreamFactory
from tests.support.procs import SIDECAR_BIN, ManagedProcess, free_port

pytestmark = pytest.mark.integration


def sidecar(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SIDECAR_BIN, *args], capture_output=True, text=True, timeout=timeout_s
    )


def test_events_query_prints_one_json_object_per_line_with_filters(
    eventlog: EventLogProcess,
) -> None:
    producer = StreamFactory("cliquery", "pod-1")
    eventlog.append([producer.config_applied(["payments"]), *producer.transitions(4)])

    result = sidecar(
        "events", "query", "--eventlog", eventlog.address, "--service", "cliquery",
        "--type", "BreakerTransitioned", "--upstream", "payments", "--limit", "3",
        "--output", "json",
    )

    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["stream"], e["version"], e["type"]) for e in lines] == [
        ("cliquery/pod-1", 2, "BreakerTransitioned"),
        ("cliquery/pod-1", 3, "BreakerTransitioned"),
        ("cliquery/pod-1", 4, "BreakerTransitioned"),
    ]
    first = lines[0]
    assert first["payload"]["from_state"] == "BREAKER_STATE_CLOSED"
    assert first["payload"]["to_state"] == "BREAKER_STATE_OPEN"
    assert len(first["hash"]) == 64 and first["occurred_at"].endswith("Z")
    positions = [e["global_position"] for e in lines]
    assert positions == sorted(positions)


def test_events_query_from_a_position_and_as_a_table(eventlog: EventLogProcess) -> None:
    reply = eventlog.append(StreamFactory("clitable", "pod-1").transitions(3))
    second = reply.results[1].global_position

    result = sidecar(
        "events", "query", "--eventlog", eventlog.address, "--service", "clitable",
        "--from-position", str(second), "--output", "table",
    )

    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:5] == ["POSITION", "OCCURRED_AT", "STREAM", "VER", "TYPE"]
    assert [row.split()[0] for row in rows] == [str(second), str(second + 1)]
    assert "OPEN -> HALF_OPEN" in rows[0]


def test_events_query_names_the_address_when_the_log_is_unreachable() -> None:
    address = f"127.0.0.1:{free_port()}"

    result = sidecar("events", "query", "--eventlog", address, "--timeout-s", "2")

    assert result.returncode == 1
    assert f"cannot reach the event log at {address}" in result.stderr


def test_events_query_refuses_an_unknown_type_naming_the_option() -> None:
    result = sidecar("events", "query", "--eventlog", "127.0.0.1:1", "--type", "Nope")

    assert result.returncode == 2
    assert "--type" in result.stderr and "Nope" in result.stderr


def test_events_tail_follows_new_events_live(eventlog: EventLogProcess, tmp_path: Path) -> None:
    producer = StreamFactory("clitail", "pod-1")
    eventlog.append(producer.transitions(2))  # before the tail's start position: not printed
    start = eventlog.head() + 1
    with ManagedProcess(
        [SIDECAR_BIN, "events", "tail", "--eventlog", eventlog.address, "--service", "clitail",
         "--from-position", str(start), "--count", "4"],
        tmp_path / "tail.log",
    ) as tail:
        eventlog.append(producer.transitions(2))
        _wait_for_lines(tail, 2)  # the tail is subscribed and has caught up
        eventlog.append(producer.transitions(2))  # these can only arrive live
        code = tail.wait(30)
        lines = _json_lines(tail)

    assert code == 0, tail.output()
    assert [e["version"] for e in lines] == [3, 4, 5, 6]


def _json_lines(process: ManagedProcess) -> list[dict[str, object]]:
    return [json.loads(line) for line in process.output().splitlines() if line.startswith("{")]


def _wait_for_lines(process: ManagedProcess, count: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(_json_lines(process)) < count:
        assert process.proc.poll() is None, process.output()
        assert time.monotonic() < deadline, f"fewer than {count} lines:\n{process.output()}"
        time.sleep(0.05)


def test_verify_passes_on_a_whole_log_and_names_the_first_tampered_event(
    tmp_path: Path,
) -> None:
    with EventLogProcess(tmp_path) as server:
        server.append(StreamFactory("audit", "pod-1").transitions(4))
        server.append(StreamFactory("audit", "pod-2").transitions(2))
    whole = sidecar("eventlog", "verify", "--store", server.store_url)

    with sqlite3.connect(server.db) as db:
        db.execute(
            "UPDATE events SET trace_id = '1' || substr(trace_id, 2) "
            "WHERE stream = 'audit/pod-1' AND version = 3"
        )
    broken = sidecar("eventlog", "verify", "--store", server.store_url)

    assert whole.returncode == 0, whole.stdout + whole.stderr
    assert whole.stdout.startswith("ok: 6 events in 2 streams")
    assert broken.returncode == 1
    assert "'audit/pod-1' version 3 at global position 3" in broken.stdout


def test_rebuild_reports_the_events_it_folded(tmp_path: Path) -> None:
    with EventLogProcess(tmp_path) as server:
        server.append(StreamFactory("rebuild", "pod-1").transitions(9))

    result = sidecar("eventlog", "rebuild", "--store", server.store_url)

    assert result.returncode == 0, result.stderr
    assert "up to position 9: 9 events" in result.stdout


def test_serve_with_a_bad_store_url_exits_2_naming_it() -> None:
    result = sidecar("eventlog", "serve", "--store", "postgres://x", "--listen", "127.0.0.1:0")

    assert result.returncode == 2
    assert "store" in result.stderr and "postgres://x" in result.stderr


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["verify", "rebuild", "serve"])
def test_an_unreachable_nats_store_is_one_line_naming_it_and_exit_1(command: str) -> None:
    # Nothing listens on the port; a short connect timeout keeps the test quick.
    url = f"nats://127.0.0.1:{free_port()}?connect_timeout_s=0.5"
    extra = ["--listen", f"127.0.0.1:{free_port()}"] if command == "serve" else []

    result = sidecar("eventlog", command, "--store", url, *extra)

    assert result.returncode == 1
    line = _one_error_line(result)
    assert line.startswith(f"sidecar eventlog {command}: error: store {url}: ")
    assert "cannot connect to NATS" in line


def test_a_password_in_the_nats_url_is_not_printed() -> None:
    url = f"nats://eventlog:s3cret@127.0.0.1:{free_port()}?connect_timeout_s=0.5"

    result = sidecar("eventlog", "verify", "--store", url)

    assert result.returncode == 1
    assert "s3cret" not in result.stderr
    assert "nats://***@127.0.0.1" in _one_error_line(result)


@pytest.mark.parametrize("command", ["verify", "rebuild"])
def test_offline_tools_refuse_a_sqlite_log_that_does_not_exist_and_create_nothing(
    command: str, tmp_path: Path
) -> None:
    url = f"sqlite://{tmp_path}/missing/dir/eventlog.db"

    result = sidecar("eventlog", command, "--store", url)

    assert result.returncode == 1
    assert _one_error_line(result) == (
        f"sidecar eventlog {command}: error: store {url}: does not exist "
        "(no event log there to open)"
    )
    assert not (tmp_path / "missing").exists()
    assert result.stdout == ""


def test_serve_names_a_sqlite_path_it_cannot_create_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("in the way")
    url = f"sqlite://{tmp_path}/plain-file/eventlog.db"

    result = sidecar("eventlog", "serve", "--store", url, "--listen", f"127.0.0.1:{free_port()}")

    assert result.returncode == 1
    assert _one_error_line(result) == (
        f"sidecar eventlog serve: error: store {url}: {tmp_path}/plain-file is not a folder"
    )


@pytest.mark.parametrize("command", ["verify", "rebuild"])
def test_offline_tools_with_a_malformed_store_url_exit_2_naming_it(command: str) -> None:
    result = sidecar("eventlog", command, "--store", "nats://no-port")

    assert result.returncode == 2
    assert "'no-port' must be HOST:PORT" in _one_error_line(result)
