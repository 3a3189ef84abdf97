"""Every float flag of every CLI, and every float setting of the event log server and its
stores, refuses NaN and infinities naming the flag or the setting."""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import subprocess
from pathlib import Path

import pytest

from sidecar.cli import main as sidecar_main
from sidecar.cli_types import finite_float, non_negative_finite_float, positive_finite_float
from sidecar.demo._phases import parse_schedule
from sidecar.eventlog.nats import NatsSettings
from sidecar.eventlog.port import open_store
from sidecar.eventlog.settings import _FLOAT_SETTINGS, ServerSettings
from sidecar.eventlog.sqlite.settings import SqliteSettings
from tests.support.cli_flags import FINITE_TYPES, FloatFlag, float_flags
from tests.support.procs import SIDECAR_BIN

ROOT = Path(__file__).resolve().parents[2]
FLAGS = float_flags()
NON_FINITE = ["nan", "NaN", "-nan", "inf", "-inf", "+Infinity", "1e999", "-1e999"]


def test_the_walk_finds_the_float_flags_of_every_cli() -> None:
    ids = {flag.id for flag in FLAGS}
    assert ids >= {
        "sidecar eventlog serve --heartbeat-interval-s",
        "sidecar eventlog serve --shutdown-grace-s",
        "sidecar events query --timeout-s", "sidecar events tail --timeout-s",
        "sidecar breakers --timeout", "sidecar health --timeout-s", "sidecar demo --duration",
        "sidecar demo --rate", "python -m sidecar.demo.upstream --started-at",
    }, ids


@pytest.mark.parametrize("flag", FLAGS, ids=lambda f: f.id)
def test_no_float_flag_uses_the_plain_float_type(flag: FloatFlag) -> None:
    assert flag.type in FINITE_TYPES, f"{flag.id}: type={flag.type.__name__} accepts nan"


def test_no_source_file_declares_a_plain_float_flag() -> None:
    sources = [p for p in (ROOT / "sidecar").rglob("*.py") if "v1" not in p.parts]
    assert len(sources) > 20
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in sources
                 for n, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"type\s*=\s*float\b", line)]
    assert offenders == [], "use sidecar.cli_types instead of type=float"


@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize("flag", FLAGS, ids=lambda f: f.id)
def test_every_float_flag_refuses_nan_and_infinities_naming_the_flag(
        flag: FloatFlag, value: str) -> None:
    code, err, _ = flag.parse(value)
    assert code == 2
    (error,) = [line for line in err.splitlines() if "error:" in line]
    assert error.endswith(f"error: argument {flag.flag}: must be a finite number, got {value!r}")


@pytest.mark.parametrize("flag", FLAGS, ids=lambda f: f.id)
def test_every_float_flag_accepts_a_finite_positive_number(flag: FloatFlag) -> None:
    assert flag.parse("1.5") == (0, "", 1.5)


def test_the_types_name_what_they_want() -> None:
    for kind in (finite_float, positive_finite_float, non_negative_finite_float):
        with pytest.raises(argparse.ArgumentTypeError, match="must be a number, got 'soon'"):
            kind("soon")
        with pytest.raises(argparse.ArgumentTypeError, match="must be a finite number, got 'inf'"):
            kind("inf")
    assert finite_float("-2.5") == -2.5
    with pytest.raises(argparse.ArgumentTypeError, match="finite number > 0, got '0'"):
        positive_finite_float("0")
    assert non_negative_finite_float("0") == 0.0
    with pytest.raises(argparse.ArgumentTypeError, match="finite number >= 0, got '-1'"):
        non_negative_finite_float("-1")


def test_the_real_cli_exits_2_with_one_line_naming_the_flag() -> None:
    done = subprocess.run(
        [SIDECAR_BIN, "eventlog", "serve", "--store", "sqlite:///unused.db",
         "--heartbeat-interval-s", "nan"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        "sidecar eventlog serve: error: argument --heartbeat-interval-s: "
        "must be a finite number, got 'nan'")


# --- --phases NAME=SECONDS -------------------------------------------------------------------


@pytest.mark.parametrize("seconds", ["inf", "nan", "1e999"])
def test_demo_phases_refuse_non_finite_seconds(
        seconds: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match=f"'healthy={seconds}': SECONDS must be > 0 and finite"):
        parse_schedule(f"healthy={seconds},outage=2")
    assert sidecar_main(["demo", "--phases", f"healthy={seconds}"]) == 2
    assert "SECONDS must be > 0 and finite" in capsys.readouterr().err


# --- server settings ---------------------------------------------------------------------------


def test_the_float_settings_list_is_every_float_field_of_server_settings() -> None:
    floats = {f.name for f in dataclasses.fields(ServerSettings) if f.type in ("float", float)}
    assert floats and floats == set(_FLOAT_SETTINGS)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("name", _FLOAT_SETTINGS)
def test_server_settings_refuse_nan_and_infinities_naming_the_setting(
        name: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"^{name}: must be a finite number, got {value!r}$"):
        ServerSettings(store_url="sqlite:///unused.db", **{name: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_the_sqlite_busy_timeout_refuses_nan_and_inf(value: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"busy_timeout_s: must be a finite number >= 0, "
                                         f"got {value}"):
        SqliteSettings(busy_timeout_s=float(value))
    with pytest.raises(ValueError, match="busy_timeout_s: must be a finite number"):
        open_store(f"sqlite:///{tmp_path}/log.db?busy_timeout_s={value}")
    assert not (tmp_path / "log.db").exists()


NATS_FLOATS = [f.name for f in dataclasses.fields(NatsSettings) if f.type in ("float", float)]


def test_the_nats_settings_have_float_fields() -> None:
    assert len(NATS_FLOATS) >= 5, NATS_FLOATS


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", NATS_FLOATS)
def test_nats_url_settings_refuse_nan_and_infinities_naming_the_setting(
        name: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"{name}: must be a finite number, got {value}"):
        NatsSettings.from_url(f"nats://127.0.0.1:4222?{name}={value}")
