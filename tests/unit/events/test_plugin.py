"""The assembled pipeline: breaker change in, event at the log out; no eventlog, no pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from sidecar.config import SidecarConfig, parse_config
from sidecar.events.outbox import OutboxLockedError
from sidecar.events.plugin import EventPipeline, proxy_plugin, resolve_token
from sidecar.protection import BreakerRegistry
from tests.unit.events._support import FakeEventLog, assert_chain, transition


def _config(tmp_path: Path, eventlog: bool = True) -> SidecarConfig:
    text = """
service: checkout
instance: pod-1
upstreams:
  payments: {address: "127.0.0.1:50051", routes: ["/payments.v1.Payments/"]}
"""
    if eventlog:
        text += f"eventlog: {{address: '127.0.0.1:7070', outbox_path: '{tmp_path}/outbox.db'}}\n"
    return parse_config(text)


def test_transitions_and_applied_config_reach_the_log_in_one_chain(tmp_path: Path) -> None:
    log = FakeEventLog()
    registry = CollectorRegistry()
    pipeline = EventPipeline(_config(tmp_path), registry=registry, exporter=log)
    pipeline.open()
    pipeline.config_applied(pipeline.config, "start")
    pipeline.recorder.on_transition(transition())
    pipeline.close(timeout_s=10.0)

    events = log.events("checkout/pod-1")
    assert [e.type for e in events] == ["ConfigApplied", "BreakerTransitioned"]
    assert_chain(events)
    assert registry.get_sample_value("sidecar_events_shipped_total") == 2
    assert registry.get_sample_value("sidecar_outbox_pending_events") == 0


def test_unshipped_events_wait_in_the_outbox_for_the_next_start(tmp_path: Path) -> None:
    log = FakeEventLog()
    log.down = True
    first = EventPipeline(_config(tmp_path), exporter=log)
    first.open()
    first.recorder.on_transition(transition())
    first.close(timeout_s=0.5)
    assert log.events("checkout/pod-1") == []

    log.down = False
    second = EventPipeline(_config(tmp_path), exporter=log)
    second.open()
    second.recorder.on_transition(transition())
    second.close(timeout_s=10.0)
    events = log.events("checkout/pod-1")
    assert len(events) == 2
    assert_chain(events)


def test_two_sidecars_cannot_share_one_outbox(tmp_path: Path) -> None:
    first = EventPipeline(_config(tmp_path), exporter=FakeEventLog())
    first.open()
    try:
        with pytest.raises(OutboxLockedError):
            EventPipeline(_config(tmp_path), exporter=FakeEventLog()).open()
    finally:
        first.close(timeout_s=1.0)


def test_without_an_eventlog_section_the_plugin_does_nothing(tmp_path: Path) -> None:
    plugin = proxy_plugin(_config(tmp_path, eventlog=False), BreakerRegistry([]))
    assert plugin.breaker_listeners == () and plugin.start is None and plugin.stop is None
    assert not (tmp_path / "outbox.db").exists()


def test_an_eventlog_added_by_a_reload_is_announced_as_needing_a_restart(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    plugin = proxy_plugin(_config(tmp_path, eventlog=False), BreakerRegistry([]))
    assert plugin.config_applied is not None
    plugin.config_applied(_config(tmp_path), "reload")
    assert "takes effect after a restart" in caplog.text


def test_with_an_eventlog_section_the_recorder_joins_every_breaker(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    plugin = proxy_plugin(_config(tmp_path), BreakerRegistry([]), registry=registry)
    assert len(plugin.breaker_listeners) == 1
    assert registry.get_sample_value("sidecar_outbox_pending_events") == 0


def test_token_comes_from_the_environment_or_its_file(tmp_path: Path) -> None:
    assert resolve_token({}) is None
    assert resolve_token({"SIDECAR_EVENTLOG_TOKEN": "s3cret"}) == "s3cret"
    (tmp_path / "token").write_text("from-file\n")
    assert resolve_token({"SIDECAR_EVENTLOG_TOKEN_FILE": str(tmp_path / "token")}) == "from-file"
