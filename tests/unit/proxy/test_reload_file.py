"""ProxyApp.reload_file, the SIGHUP callback: any failure is one log line, False, and the running
config stays; nothing ever escapes the signal callback."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import sidecar.proxy.app as app_module
from sidecar.config import parse_config
from sidecar.proxy.app import ProxyApp

MINIMAL = """
service: checkout
upstreams:
  payments: {address: "127.0.0.1:50051", routes: ["/payments.v1.Payments/"]}
"""


@pytest.fixture
def app() -> ProxyApp:
    return ProxyApp(parse_config(MINIMAL, env={}))


def _non_utf8(tmp_path: Path) -> Path:
    path = tmp_path / "sidecar.yaml"
    path.write_bytes(MINIMAL.encode() + b"instance: \xff\xfe\n")
    return path


def _directory(tmp_path: Path) -> Path:
    path = tmp_path / "conf.d"
    path.mkdir()
    return path


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "sidecar.yaml"
    path.write_bytes(b"")
    return path


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "absent.yaml"


def _invalid(tmp_path: Path) -> Path:
    path = tmp_path / "sidecar.yaml"
    path.write_text(MINIMAL.replace("127.0.0.1:50051", "nowhere"))
    return path


BAD_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "non-utf8": (_non_utf8, "is not UTF-8: byte 0xff at offset"),
    "directory": (_directory, "is a directory"),
    "empty": (_empty, "is empty"),
    "missing": (_missing, "No such file or directory"),
    "invalid": (_invalid, "upstreams.payments.address"),
}


def _reload_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "sidecar.proxy"]


def _assert_one_refusal(caplog: pytest.LogCaptureFixture, *fragments: str) -> str:
    (record,) = _reload_lines(caplog)
    assert record.levelno == logging.ERROR
    message = record.getMessage()
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert getattr(record, "accepted", None) is False
    return message


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_a_bad_file_is_refused_with_one_log_line_and_the_config_kept(
        app: ProxyApp, tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str) -> None:
    make, problem = BAD_FILES[kind]
    path = make(tmp_path)
    before = app.config
    with caplog.at_level(logging.INFO, logger="sidecar.proxy"):
        assert app.reload_file(path) is False
    message = _assert_one_refusal(caplog, "config reload refused", str(path), problem)
    assert "keeping the running config" in message
    assert app.config is before


def test_an_unexpected_exception_while_loading_is_refused_not_raised(
        app: ProxyApp, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_path: Any) -> None:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    monkeypatch.setattr(app_module, "load_config", broken)
    before = app.config
    with caplog.at_level(logging.INFO, logger="sidecar.proxy"):
        assert app.reload_file(tmp_path / "sidecar.yaml") is False
    _assert_one_refusal(caplog, "config reload refused", "UnicodeDecodeError")
    assert app.config is before


def test_an_exception_while_applying_is_one_log_line_and_false(
        app: ProxyApp, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_text(MINIMAL.replace("50051", "50052"))

    def broken(_config: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(app, "reload", broken)
    before = app.config
    with caplog.at_level(logging.INFO, logger="sidecar.proxy"):
        assert app.reload_file(path) is False
    _assert_one_refusal(caplog, "failed part way", "RuntimeError: boom", str(path))
    assert app.config is before


@pytest.mark.parametrize("kind", ["non-utf8", "directory"])
async def test_sighup_with_a_bad_file_raises_nothing_out_of_the_signal_callback(
        app: ProxyApp, tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str) -> None:
    """Wired as ProxyApp.serve wires it: loop.add_signal_handler(SIGHUP, reload_file)."""
    path = BAD_FILES[kind][0](tmp_path)
    loop = asyncio.get_running_loop()
    escaped: list[dict[str, Any]] = []
    results: list[bool] = []
    called = asyncio.Event()

    def on_sighup() -> None:
        called.set()
        results.append(app.reload_file(path))

    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: escaped.append(context))
    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    before = app.config
    try:
        with caplog.at_level(logging.INFO, logger="sidecar.proxy"):
            os.kill(os.getpid(), signal.SIGHUP)
            await asyncio.wait_for(called.wait(), 5)
            await asyncio.sleep(0)
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        loop.set_exception_handler(previous_handler)
    assert escaped == []
    assert results == [False]
    _assert_one_refusal(caplog, "config reload refused", str(path))
    assert app.config is before
