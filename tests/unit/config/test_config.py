"""Config: every key of docs/configuration.md parses, defaults come from one place, and a bad
file is refused with the key path and the problem."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.breaker import BreakerSettings, Mode
from sidecar.config import (
    DEFAULT_KEEPALIVE_MS,
    MIN_KEEPALIVE_MS,
    ConfigError,
    load_config,
    parse_config,
)
from sidecar.config._loading import MAX_CONFIG_BYTES

FULL_EXAMPLE = """
service: checkout
instance: checkout-7d9f
listen: 127.0.0.1:15001
admin_listen: 127.0.0.1:15000
metrics_listen: 127.0.0.1:9464
upstreams:
  payments:
    address: 127.0.0.1:50051
    routes: ["/payments.v1.Payments/"]
    timeout_ms: 2000
    breaker:
      window: {type: count, size: 20}
      minimum_calls: 10
      failure_rate: 0.5
      slow_call_ms: 500
      slow_call_rate: 0.8
      consecutive_failures: 5
      failure_codes: [UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, RESOURCE_EXHAUSTED]
      half_open_probes: 3
      streak_decay_ms: 45000
      open: {base_ms: 1000, multiplier: 2.0, max_ms: 60000, jitter: 0.2}
      mode: enforce
    fallback: {upstream: payments-backup}
  payments-backup:
    address: 127.0.0.1:50052
    routes: ["/payments.v1.Backup/"]
    breaker:
      window: {type: time, seconds: 10}
    fallback: {status: UNAVAILABLE, message: "payments are down"}
eventlog:
  address: 127.0.0.1:7070
  outbox_path: ./sidecar-outbox.db
tracing:
  otlp_endpoint: http://127.0.0.1:4317
  sample_ratio: 1.0
"""

MINIMAL = """
service: checkout
upstreams:
  payments: {address: "127.0.0.1:50051", routes: ["/payments.v1.Payments/"]}
"""


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env=env or {})
    return info.value.problems


def test_the_design_example_parses_with_every_key() -> None:
    config = parse_config(FULL_EXAMPLE, env={})
    payments = config.upstreams["payments"]
    assert config.stream == "checkout/checkout-7d9f"
    assert payments.fallback is not None and payments.fallback.upstream == "payments-backup"
    settings = payments.breaker.to_settings()
    assert settings.window_type == "count" and settings.window_size == 20
    assert settings.open_max_ms == 60000 and settings.mode is Mode.ENFORCE
    assert settings.streak_decay_ms == 45000
    backup = config.upstreams["payments-backup"].breaker.to_settings()
    assert backup.window_type == "time" and backup.window_seconds == 10
    assert config.eventlog is not None and config.tracing.otlp_endpoint == "http://127.0.0.1:4317"


def test_omitted_breaker_keys_take_the_breakers_own_defaults() -> None:
    config = parse_config(MINIMAL, env={})
    assert config.upstreams["payments"].breaker.to_settings() == BreakerSettings()
    assert config.eventlog is None  # events then only reach traces, metrics and logs


def test_instance_defaults_to_the_hostname() -> None:
    import socket

    assert parse_config(MINIMAL, env={}).instance == socket.gethostname()


def test_a_bad_rate_names_the_key_path_and_the_rule() -> None:
    text = MINIMAL.replace("routes:", "breaker: {failure_rate: 1.5}, routes:")
    assert problems_of(text) == ["upstreams.payments.breaker.failure_rate: must be > 0 and <= 1"]


def test_an_unknown_key_is_an_error_not_silently_ignored() -> None:
    text = MINIMAL.replace("routes:", "breakr: {}, routes:")
    [problem] = problems_of(text)
    assert problem.startswith("upstreams.payments.breakr: unknown key")


def test_every_problem_in_a_file_is_reported_at_once() -> None:
    text = """
service: checkout
listen: nowhere
upstreams:
  payments:
    address: 127.0.0.1:99999
    routes: ["payments"]
    breaker: {window: {type: time, seconds: -1}, open: {base_ms: 5000, max_ms: 10}}
"""
    found = problems_of(text)
    assert any(p.startswith("listen: must be HOST:PORT") for p in found)
    assert any(p.startswith("upstreams.payments.address: must be HOST:PORT") for p in found)
    assert any(p.startswith("upstreams.payments.routes[0]: route 'payments'") for p in found)
    assert "upstreams.payments.breaker.window.seconds: must be > 0" in found
    assert any(p.startswith("upstreams.payments.breaker.open: max_ms") for p in found)


def test_missing_required_keys_are_named() -> None:
    assert problems_of("listen: 127.0.0.1:1\n") == [
        "service: required key is missing",
        "upstreams: required key is missing",
    ]


def test_fallback_must_name_an_existing_other_upstream() -> None:
    text = MINIMAL.replace("routes:", "fallback: {upstream: nope}, routes:")
    assert problems_of(text) == ["upstreams.payments.fallback.upstream: no upstream named 'nope'"]


def test_fallback_takes_exactly_one_kind() -> None:
    text = MINIMAL.replace("routes:", "fallback: {upstream: a, status: INTERNAL}, routes:")
    [problem] = problems_of(text)
    assert problem == "upstreams.payments.fallback: set exactly one of 'upstream' or 'status'"


def test_unknown_status_codes_are_refused() -> None:
    text = MINIMAL.replace("routes:", "breaker: {failure_codes: [UNAVAILABLE, OOPS]}, routes:")
    [problem] = problems_of(text)
    assert problem.startswith("upstreams.payments.breaker.failure_codes[1]: unknown gRPC status")


def test_the_same_route_cannot_go_to_two_upstreams() -> None:
    text = MINIMAL + '  other: {address: "127.0.0.1:1", routes: ["/payments.v1.Payments/"]}\n'
    [problem] = problems_of(text)
    assert "is already routed to 'payments'" in problem


def test_environment_references_are_expanded() -> None:
    text = MINIMAL + "instance: ${POD_NAME}\nlisten: 127.0.0.1:${PORT:-15001}\n"
    config = parse_config(text, env={"POD_NAME": "checkout-abc"})
    assert config.instance == "checkout-abc" and config.listen == "127.0.0.1:15001"


def test_a_missing_environment_variable_is_named_with_its_key() -> None:
    assert problems_of(MINIMAL + "instance: ${POD_NAME}\n") == [
        "instance: environment variable POD_NAME is not set"
    ]


def test_broken_yaml_and_non_mappings_are_refused() -> None:
    assert problems_of("service: [unclosed\n")[0].startswith("(yaml):")
    assert problems_of("- a list\n") == ["(top level): must be a mapping of keys to values"]


def load_problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.source == str(path)
    return info.value.problems


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert load_problems(path) == [
        f"(file): cannot read '{path}': No such file or directory"]


def test_a_file_that_is_not_utf8_names_the_path_and_the_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(MINIMAL.encode() + b"instance: caf\xe9\n")
    offset = len(MINIMAL.encode()) + len(b"instance: caf")
    assert load_problems(path) == [
        f"(file): '{path}' is not UTF-8: byte 0xe9 at offset {offset} (invalid continuation byte)"
    ]


@pytest.mark.parametrize("content", [b"", b"\n  \n\t\n"])
def test_an_empty_file_is_refused_as_empty(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.yaml"
    path.write_bytes(content)
    assert load_problems(path) == [
        f"(file): '{path}' is empty (expected a YAML mapping with service and upstreams)"]


def test_a_directory_is_refused_as_a_directory(tmp_path: Path) -> None:
    assert load_problems(tmp_path) == [f"(file): '{tmp_path}' is a directory, not a YAML file"]


def test_a_path_through_a_file_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text(MINIMAL)
    path = tmp_path / "plain" / "sidecar.yaml"
    assert load_problems(path) == [f"(file): cannot read '{path}': Not a directory"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_a_file_without_read_permission_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text(MINIMAL)
    path.chmod(0)
    assert load_problems(path) == [f"(file): cannot read '{path}': Permission denied"]


def test_a_file_larger_than_the_limit_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_bytes(MINIMAL.encode() + b"#" * MAX_CONFIG_BYTES)
    assert load_problems(path) == [f"(file): '{path}' is larger than {MAX_CONFIG_BYTES} bytes"]


def test_a_utf8_file_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_config(path, env={}).service == "checkout"


@given(rate=st.floats(allow_nan=False, allow_infinity=False))
def test_failure_rate_is_accepted_exactly_when_in_the_half_open_unit_interval(rate: float) -> None:
    text = MINIMAL.replace("routes:", f"breaker: {{failure_rate: {rate!r}}}, routes:")
    if 0 < rate <= 1:
        assert parse_config(text, env={}).upstreams["payments"].breaker.failure_rate == rate
    else:
        assert problems_of(text) == [
            "upstreams.payments.breaker.failure_rate: must be > 0 and <= 1"
        ]


def test_streak_decay_ms_defaults_to_30_s_and_reaches_the_breaker() -> None:
    breaker = parse_config(MINIMAL, env={}).upstreams["payments"].breaker
    assert breaker.streak_decay_ms == 30000 == breaker.to_settings().streak_decay_ms
    text = MINIMAL.replace("routes:", "breaker: {streak_decay_ms: 1500}, routes:")
    settings = parse_config(text, env={}).upstreams["payments"].breaker.to_settings()
    assert settings.streak_decay_ms == 1500


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "must be > 0"),
        ("-5", "must be > 0"),
        (".inf", "Input should be a finite number"),
        (".nan", "Input should be a finite number"),
        ("soon", "Input should be a valid number, unable to parse string as a number"),
    ],
)
def test_streak_decay_ms_must_be_a_finite_positive_number(value: str, message: str) -> None:
    text = MINIMAL.replace("routes:", f"breaker: {{streak_decay_ms: {value}}}, routes:")
    assert problems_of(text) == [f"upstreams.payments.breaker.streak_decay_ms: {message}"]


@pytest.mark.parametrize("value", ["1", "20", "null", "{}"])
def test_the_old_streak_decay_windows_key_is_refused_naming_its_replacement(value: str) -> None:
    text = MINIMAL.replace(
        "routes:", f"breaker: {{streak_decay_windows: {value}, failure_rate: 2}}, routes:"
    )
    assert sorted(problems_of(text)) == [
        "upstreams.payments.breaker.failure_rate: must be > 0 and <= 1",  # still all at once
        "upstreams.payments.breaker.streak_decay_windows: replaced by streak_decay_ms (the trip "
        "streak now decays with time spent CLOSED, not with call counts)",
    ]


def test_the_removed_key_leaves_no_trace_in_a_valid_config() -> None:
    config = parse_config(MINIMAL, env={})
    assert "streak_decay_windows" not in config.model_dump()["upstreams"]["payments"]["breaker"]
    assert "streak_decay_windows" not in repr(config.upstreams["payments"].breaker)


def test_thresholds_a_count_window_can_never_reach_are_refused() -> None:
    text = MINIMAL.replace(
        "routes:", "breaker: {window: {size: 5}, minimum_calls: 10}, routes:"
    )
    assert problems_of(text) == [
        "upstreams.payments.breaker: minimum_calls (10) must be <= window.size (5)"
    ]


def test_yaml_anchors_can_share_breaker_settings_between_upstreams() -> None:
    text = """
service: checkout
upstreams:
  a: {address: "127.0.0.1:1", routes: ["/a/"], breaker: &shared {failure_rate: 0.3}}
  b: {address: "127.0.0.1:2", routes: ["/b/"], breaker: *shared}
"""
    config = parse_config(text, env={})
    assert config.upstreams["b"].breaker.failure_rate == 0.3


def test_non_finite_numbers_are_refused() -> None:
    text = MINIMAL.replace("routes:", "timeout_ms: .nan, routes:")
    assert problems_of(text) == ["upstreams.payments.timeout_ms: Input should be a finite number"]


def test_upstream_keepalive_is_on_by_default_and_null_turns_it_off() -> None:
    assert parse_config(MINIMAL).upstreams["payments"].keepalive_ms == DEFAULT_KEEPALIVE_MS
    off = parse_config(MINIMAL.replace("routes:", "keepalive_ms: null, routes:"))
    assert off.upstreams["payments"].keepalive_ms is None


def test_too_frequent_keepalive_pings_are_refused_naming_the_key() -> None:
    text = MINIMAL.replace("routes:", "keepalive_ms: 200, keepalive_timeout_ms: 0, routes:")
    assert problems_of(text) == [
        f"upstreams.payments.keepalive_ms: Input should be greater than or equal to "
        f"{MIN_KEEPALIVE_MS}",
        "upstreams.payments.keepalive_timeout_ms: Input should be greater than or equal to 1",
    ]
