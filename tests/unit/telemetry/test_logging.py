"""JSON log lines: format, trace ids, levels, the transition listener, never blocking."""

from __future__ import annotations

import io
import json
import logging
import threading
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from sidecar.breaker import State
from sidecar.telemetry.logging import (
    JsonFormatter,
    LoggingBreakerListener,
    LogPipeline,
    configure_logging,
)
from tests.unit.telemetry.builders import transition


def _record(msg: str = "hello %s", args: tuple[Any, ...] = ("world",),
            level: int = logging.INFO, **extra: Any) -> logging.LogRecord:
    record = logging.getLogger("sidecar.test").makeRecord(
        "sidecar.test", level, __file__, 1, msg, args, None, extra=extra or None)
    return record


def test_a_record_becomes_one_json_object_on_one_line_with_the_core_keys() -> None:
    line = JsonFormatter().format(_record())

    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "INFO"
    assert entry["logger"] == "sidecar.test"
    assert entry["msg"] == "hello world"
    assert entry["ts"].endswith("Z") and "T" in entry["ts"]
    assert "trace_id" not in entry  # no span is current


def test_extra_fields_become_top_level_keys_but_never_overwrite_core_keys() -> None:
    entry = json.loads(JsonFormatter().format(
        _record(event="reload", upstream="payments", level_hint=3, msg_extra={"a": (1, 2)})))

    assert entry["event"] == "reload"
    assert entry["upstream"] == "payments"
    assert entry["msg_extra"] == {"a": [1, 2]}
    assert entry["msg"] == "hello world"


def test_the_current_span_ids_are_written_on_the_line() -> None:
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("call") as span:
        entry = json.loads(JsonFormatter().format(_record()))
    context = span.get_span_context()

    assert entry["trace_id"] == format(context.trace_id, "032x")
    assert entry["span_id"] == format(context.span_id, "016x")


def test_an_exception_is_written_as_a_field_of_the_same_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), exc_info=__import__("sys").exc_info())
    line = JsonFormatter().format(record)

    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exc"]


def test_the_pipeline_writes_lines_at_or_above_the_configured_level() -> None:
    stream = io.StringIO()
    pipeline = configure_logging("WARNING", stream)
    try:
        logging.getLogger("sidecar.a").info("hidden")
        logging.getLogger("sidecar.a").warning("shown", extra={"event": "error"})
        pipeline.set_level("DEBUG")
        logging.getLogger("sidecar.a").debug("now shown")
    finally:
        pipeline.close()

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["msg"] for line in lines] == ["shown", "now shown"]
    assert lines[0]["event"] == "error"


def test_the_pipeline_formats_in_the_caller_so_the_callers_span_is_on_the_line() -> None:
    stream = io.StringIO()
    pipeline = LogPipeline("INFO", stream)
    tracer = TracerProvider().get_tracer("t")
    try:
        with tracer.start_as_current_span("call") as span:
            logging.getLogger("sidecar.a").info("inside")
    finally:
        pipeline.close()

    (entry,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert entry["trace_id"] == format(span.get_span_context().trace_id, "032x")


def test_an_unknown_level_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match=r"logging\.level"):
        LogPipeline("LOUD", io.StringIO())


class _BlockingStream(io.StringIO):
    """A stream whose writes wait until released: a stuck stderr pipe."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, s: str) -> int:
        self.release.wait(10)
        return super().write(s)


def test_a_stuck_output_drops_and_counts_lines_instead_of_blocking_the_caller() -> None:
    stream = _BlockingStream()
    pipeline = LogPipeline("INFO", stream, queue_size=1)
    try:
        for i in range(3):  # returns at once although nothing can be written
            logging.getLogger("sidecar.a").info("line %d", i)
        dropped = pipeline.dropped
    finally:
        stream.release.set()
        pipeline.close()

    assert dropped >= 1
    assert len(stream.getvalue().splitlines()) == 3 - dropped


def test_a_transition_is_logged_with_its_numbers_and_the_causing_calls_trace_id() -> None:
    stream = io.StringIO()
    pipeline = LogPipeline("INFO", stream)
    tracer = TracerProvider().get_tracer("t")
    try:
        with tracer.start_as_current_span("call") as span:
            LoggingBreakerListener().on_transition(transition())
        LoggingBreakerListener().on_transition(
            transition(from_state=State.OPEN, to_state=State.HALF_OPEN, reason="open_elapsed"))
    finally:
        pipeline.close()

    opened, half_open = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert opened["level"] == "WARNING"
    assert opened["event"] == "transition"
    assert opened["upstream"] == "payments"
    assert (opened["from_state"], opened["to_state"], opened["reason"]) == (
        "closed", "open", "failure_rate")
    assert opened["failure_rate"] == 0.6
    assert opened["calls_in_window"] == 10
    assert opened["open_duration_s"] == 1.5
    assert opened["trip_streak"] == 1
    assert opened["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert half_open["level"] == "INFO"
    assert "trace_id" not in half_open
