"""The command line a newcomer meets first: `sidecar --help` and `sidecar demo`."""

from __future__ import annotations

import subprocess

import pytest

from sidecar.breaker import State
from sidecar.cli import main
from sidecar.demo import run_scripted_demo
from tests.support.procs import SIDECAR_BIN


def test_help_lists_the_subcommands() -> None:
    result = subprocess.run([SIDECAR_BIN, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for command in ("proxy", "demo"):
        assert command in result.stdout


def test_no_subcommand_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: sidecar" in capsys.readouterr().out


def test_scripted_demo_shows_a_trip_and_a_recovery(capsys: pytest.CaptureFixture[str]) -> None:
    transitions = run_scripted_demo()
    pairs = [(t.from_state, t.to_state) for t in transitions]
    assert (State.CLOSED, State.OPEN) in pairs
    assert pairs[-1] == (State.HALF_OPEN, State.CLOSED)
    printed = capsys.readouterr().out
    assert printed.count("\n") >= len(transitions)
    assert "final state: closed" in printed


def test_scripted_demo_open_durations_grow_with_the_trip_streak() -> None:
    opens = [t for t in run_scripted_demo() if t.to_state is State.OPEN]
    streaks = [t.trip_streak for t in opens]
    assert streaks == sorted(streaks) and streaks[-1] > 1
    # base 1 s, multiplier 2, cap 8 s, jitter 10%: later opens last longer
    assert opens[-1].open_duration_s > opens[0].open_duration_s
