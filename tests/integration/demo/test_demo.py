"""`sidecar demo`, the quick start's main job, run exactly as a newcomer runs it (through the
CLI, not on a terminal, so it prints plain lines): the whole system starts, the breaker trips
and recovers, the transitions come back from the event log, the sick orders replica is ejected
and comes back while the others serve and retries hide its failures from the callers,
catalog's surge is shed by the adaptive limit (shedding started and stopped read back from
the log), and every process it started is gone when it ends (duration over, Ctrl-C, or even
the demo killed outright)."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.support.procs import SIDECAR_BIN, ManagedProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# Short phases so a trip and a recovery fit in a bounded run.
PHASES = "healthy=3,brownout=4,outage=4,recovery=12"
# The sick orders replica: ejected (4 s) at about 3.5 s, back at about 7.5 s while still sick,
# ejected again for 8 s within a second or two, back for good at about 17 s (healed at 11 s).
ORDERS_PHASES = "healthy=3,sick=8,healed=30"
EXIT_TIMEOUT_S = 60.0
STOPPED = ("stopped: sidecar (exit 0), event log (exit 0), sample upstream (exit 0), "
           "orders-3 (exit 0), orders-2 (exit 0), orders-1 (exit 0)")


def _demo(tmp_path: Path, *args: str) -> ManagedProcess:
    return ManagedProcess([SIDECAR_BIN, "demo", "--data", str(tmp_path / "data"),
                           "--phases", PHASES, *args], tmp_path / "demo.log")


def _child_pids(output: str) -> list[int]:
    pids = [int(pid) for pid in re.findall(r"\[pid (\d+)\]", output)]
    assert len(pids) == 6, output  # sample upstream, 3 orders replicas, sidecar, event log
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that mention ``text`` (the demo's data folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and _alive(int(proc.name)):
            found.append(f"{proc.name}: {cmdline}")
    return found


def _wait_for_output(demo: ManagedProcess, pattern: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        output = demo.output()
        if re.search(pattern, output):
            return output
        if demo.proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} not printed within {timeout_s}s:\n{demo.output()}")


def _assert_nothing_left(output: str, data_dir: Path, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = [pid for pid in _child_pids(output) if _alive(pid)]
        leftovers = _processes_mentioning(str(data_dir))
        if not alive and not leftovers:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes left behind: {alive} {leftovers}")


def test_a_bounded_demo_shows_a_trip_and_a_recovery_and_leaves_nothing_behind(
        tmp_path: Path) -> None:
    with _demo(tmp_path, "--duration", "22") as demo:
        status = demo.wait(EXIT_TIMEOUT_S)
        output = demo.output()
    print(output)
    assert status == 0, output
    # where to point Prometheus and `sidecar events query`
    assert re.search(r"metrics http://127\.0\.0\.1:\d+/metrics", output)
    assert re.search(r"sidecar events query --eventlog 127\.0\.0\.1:\d+", output)
    # a full trip and recovery, as read back from the event log
    transitions = re.findall(r"payments\s+(\w+) -> (\w+)\s+reason=", output)
    assert ("CLOSED", "OPEN") in transitions, output
    assert ("HALF_OPEN", "CLOSED") in transitions, output
    first_trip = transitions.index(("CLOSED", "OPEN"))
    assert ("HALF_OPEN", "CLOSED") in transitions[first_trip:]
    assert STOPPED in output
    assert re.search(r"payments\s+\d+ trips?, \d+ recover", output)
    data = tmp_path / "data"
    assert (data / "events.db").exists() and (data / "prometheus.yml").exists()
    _assert_nothing_left(output, data)


_ENDPOINT_LINE = re.compile(
    r"^\s*(?P<elapsed>[\d.]+)s\s+\[\s*(?P<phase>\w+)\]\s+orders\s+orders-2 127\.0\.0\.1:\d+\s+"
    r"(?P<change>active -> ejected|ejected -> active)\s.*?"
    r"(?:out (?P<out>[\d.]+)s \((?P<in_a_row>\d+) in a row\)|after (?P<after>[\d.]+)s out)"
    r"\s+\((?:log #\d+|seen in the admin API)", re.MULTILINE)


def test_the_sick_orders_replica_is_ejected_returns_is_ejected_longer_and_stays_back(
        tmp_path: Path) -> None:
    with _demo(tmp_path, "--orders-phases", ORDERS_PHASES, "--duration", "20") as demo:
        status = demo.wait(EXIT_TIMEOUT_S)
        output = demo.output()
    print(output)
    assert status == 0, output
    changes = [(m["change"], float(m["elapsed"]), m["out"], m["in_a_row"])
               for m in _ENDPOINT_LINE.finditer(output)]
    assert [change for change, *_ in changes] == [
        "active -> ejected", "ejected -> active", "active -> ejected", "ejected -> active"
    ], output
    first, back, second, home = changes
    assert 3.0 <= first[1] < 6.0 and first[2:] == ("4.0", "1")
    assert back[1] == pytest.approx(first[1] + 4.0, abs=0.6)
    assert back[1] < second[1] < 11.5 and second[2:] == ("8.0", "2")  # still sick: longer
    assert home[1] == pytest.approx(second[1] + 8.0, abs=0.6)  # healed by then: stays back
    # the other two served: callers kept near-100% success and the orders breaker stayed shut
    assert not re.search(r"^\s*[\d.]+s\s+\[.*\]\s+orders\s+CLOSED -> OPEN", output, re.MULTILINE)
    summary = re.search(r"^  orders\s+0 trips, 0 recoveries; calls: (\d+) ok(?:, (\d+) failed)?$",
                        output, re.MULTILINE)
    assert summary, output
    ok, failed = int(summary[1]), int(summary[2] or 0)
    assert ok > 300 and failed / (ok + failed) < 0.01, output
    assert re.search(r"^  orders-2\s+2 ejections, 2 returns", output, re.MULTILINE)
    # retries hid the sick replica's failures: told a moment into the spell and at its end
    masked = re.findall(r"^\s*[\d.]+s\s+\[\s*(sick|healed)\]\s+orders\s+(?:sick spell over: )?"
                        r"(\d+) failures of orders-2 retried on another replica; callers saw "
                        r"(\d+) failures", output, re.MULTILINE)
    assert [phase for phase, *_ in masked] == ["sick", "healed"], output
    (_, early, early_seen), (_, spell, spell_seen) = masked
    assert 0 < int(early) <= int(spell) and int(early_seen) <= int(spell_seen) <= 2, output
    retried = re.search(r"^  orders\s+retried (\d+) calls? \(budget refused \d+\); callers' "
                        r"failures (\d+) of (\d+) calls$", output, re.MULTILINE)
    assert retried and int(retried[1]) >= int(spell) and int(retried[2]) == failed, output
    _assert_nothing_left(output, tmp_path / "data")


# catalog: normal load (well under its ~160 calls/s capacity), then 3x it for 7 s, then normal
CATALOG_PHASES = "normal=3,surge=7,normal=30"
_SHEDDING_LINE = re.compile(
    r"^\s*(?P<elapsed>[\d.]+)s\s+\[\s*(?P<phase>\w+)\]\s+catalog\s+shedding "
    r"(?P<change>started|stopped)\b.*\s\((?P<where>log #\d+|seen in the admin API)",
    re.MULTILINE)


def test_catalog_s_surge_is_shed_by_the_adaptive_limit_while_admitted_calls_are_served(
        tmp_path: Path) -> None:
    with _demo(tmp_path, "--catalog-phases", CATALOG_PHASES, "--duration", "15") as demo:
        status = demo.wait(EXIT_TIMEOUT_S)
        output = demo.output()
    print(output)
    assert status == 0, output
    changes = [(m["change"], float(m["elapsed"]), m["phase"], m["where"])
               for m in _SHEDDING_LINE.finditer(output)]
    assert changes and changes[0][0] == "started" and changes[-1][0] == "stopped", output
    started, stopped = changes[0], changes[-1]
    assert 2.5 <= started[1] < 10.0, output  # once the surge begins (at 3 s)
    assert stopped[1] >= 10.0 and stopped[2] == "normal", output  # the surge over: it stops
    assert all(where.startswith("log #") for *_, where in changes), output  # LoadShedding
    summary = re.search(r"^  catalog\s+\d+ trips?, \d+ recover\w+; calls: (\d+) ok(.*)$", output,
                        re.MULTILINE)
    assert summary, output
    overflow = re.search(r"(\d+) overflow", summary[2])
    assert overflow and int(overflow[1]) > 500, output  # refused at once, not queued
    assert "failed" not in summary[2], output  # nothing timed out waiting in a queue
    assert int(summary[1]) > 0.4 * 160 * 7, output  # the admitted calls were served
    shed = re.search(r"^  catalog\s+shed (\d+) calls \(callers saw (\d+) overflow\) in (\d+) "
                     r"shedding periods?: ", output, re.MULTILINE)
    assert shed and int(shed[3]) >= 1, output
    # the callers' overflows are the limit's sheds (the sidecar's count, read from its admin API)
    assert abs(int(shed[1]) - int(overflow[1])) <= 0.05 * int(overflow[1]), output
    _assert_nothing_left(output, tmp_path / "data")


def test_ctrl_c_stops_every_process_the_demo_started(tmp_path: Path) -> None:
    with _demo(tmp_path) as demo:  # no --duration: runs until interrupted
        output = _wait_for_output(demo, r"payments\s+CLOSED -> OPEN", 40)
        demo.signal(signal.SIGINT)
        status = demo.wait(EXIT_TIMEOUT_S)
        output = demo.output()
    assert status == 0, output
    assert "stopping (SIGINT received)" in output
    assert STOPPED in output
    _assert_nothing_left(output, tmp_path / "data")


def test_a_killed_demo_takes_its_processes_with_it(tmp_path: Path) -> None:
    with _demo(tmp_path) as demo:
        output = _wait_for_output(demo, r"running until Ctrl-C", 40)
        os.kill(demo.pid, signal.SIGKILL)  # only the demo itself, not its process group
        demo.wait(10)
    _assert_nothing_left(output, tmp_path / "data")
