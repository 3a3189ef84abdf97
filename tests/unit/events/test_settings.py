"""Event pipeline settings: defaults in one place, bad values named; the config's eventlog
section maps onto them."""

from __future__ import annotations

import pytest

from sidecar.config import ConfigError, parse_config
from sidecar.events.settings import EventsSettings

BASE = """
service: checkout
instance: pod-1
upstreams:
  payments: {address: "127.0.0.1:50051", routes: ["/payments.v1.Payments/"]}
"""


@pytest.mark.parametrize(("field", "value", "message"), [
    ("queue_size", 0, "queue_size: must be an integer >= 1, got 0"),
    ("batch_size", 5000, "batch_size: must be <= 1000"),
    ("backoff_jitter", 1.0, "backoff_jitter: must be >= 0 and < 1"),
    ("backoff_max_ms", 10.0, "backoff_max_ms: must be >= backoff_base_ms"),
    ("flush_interval_ms", float("nan"), "flush_interval_ms: must be a finite number > 0"),
    ("outbox_path", " ", "outbox_path: must be a non-empty path"),
    ("outbox_keep_acked", -1, "outbox_keep_acked: must be an integer >= 0, got -1"),
])
def test_a_bad_setting_is_refused_naming_the_field(field: str, value: object,
                                                   message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        EventsSettings(**{field: value})  # type: ignore[arg-type]


def test_eventlog_section_defaults_come_from_the_settings() -> None:
    config = parse_config(BASE + "eventlog: {address: '127.0.0.1:7070'}\n")
    assert config.eventlog is not None
    assert config.eventlog.to_settings() == EventsSettings()


def test_eventlog_section_tunes_the_pipeline() -> None:
    config = parse_config(BASE + """
eventlog:
  address: 127.0.0.1:7070
  outbox_path: /tmp/x.db
  outbox_max_events: 50
  batch_size: 10
  backoff: {base_ms: 50, max_ms: 2000}
""")
    assert config.eventlog is not None
    settings = config.eventlog.to_settings()
    assert (settings.outbox_path, settings.outbox_max_events, settings.batch_size) == (
        "/tmp/x.db", 50, 10)
    assert (settings.backoff_base_ms, settings.backoff_max_ms) == (50, 2000)


def test_bad_eventlog_keys_are_refused_with_their_path() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(BASE + """
eventlog:
  address: 127.0.0.1:7070
  outbox_max_events: 0
  backoff: {base_ms: 500, max_ms: 100}
  batch_sise: 3
""")
    text = str(error.value)
    assert "eventlog.outbox_max_events: Input should be greater than or equal to 1" in text
    assert "eventlog.backoff: max_ms (100) must be >= base_ms (500)" in text
    assert "eventlog.batch_sise: unknown key" in text


def test_outbox_keep_acked_defaults_to_ten_thousand_and_a_negative_one_names_its_key() -> None:
    assert EventsSettings().outbox_keep_acked == 10_000
    config = parse_config(BASE + "eventlog: {address: '127.0.0.1:7070', outbox_keep_acked: 0}\n")
    assert config.eventlog is not None and config.eventlog.to_settings().outbox_keep_acked == 0
    with pytest.raises(ConfigError, match="outbox_keep_acked"):
        parse_config(BASE + "eventlog: {address: '127.0.0.1:7070', outbox_keep_acked: -5}\n")
