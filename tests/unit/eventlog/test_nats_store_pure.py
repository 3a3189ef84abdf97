"""Pure parts of the JetStream adapter: URL settings, subjects, the stored body, timestamps."""

from __future__ import annotations

import pytest

from sidecar.eventlog.nats import (
    DEFAULT_REPLICAS,
    DEFAULT_STREAM,
    NatsSettings,
    decode_event,
    encode_event,
)
from sidecar.eventlog.nats.subjects import Subjects, stream_sequence
from sidecar.eventlog.port import EventFilter, StoreError
from tests.support.events import StreamFactory


def test_url_with_several_servers_and_options_becomes_settings() -> None:
    settings = NatsSettings.from_url(
        "nats://10.0.0.1:4222,10.0.0.2:4222?replicas=3&stream=LOG_A&duplicate_window_s=1.5"
    )

    assert settings.servers == ("nats://10.0.0.1:4222", "nats://10.0.0.2:4222")
    assert settings.replicas == 3
    assert settings.stream == "LOG_A"
    assert settings.duplicate_window_s == 1.5
    assert settings.checkpoint_bucket == "LOG_A_CHECKPOINTS"


def test_url_without_options_uses_the_defaults() -> None:
    settings = NatsSettings.from_url("nats://127.0.0.1:4222")

    assert (settings.stream, settings.replicas) == (DEFAULT_STREAM, DEFAULT_REPLICAS)


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("nats://127.0.0.1", "HOST:PORT"),
        ("nats://127.0.0.1:99999", "HOST:PORT"),
        ("nats://a:1?replicas=7", "replicas"),
        ("nats://a:1?replicas=three", "replicas"),
        ("nats://a:1?stream=has.dot", "stream"),
        ("nats://a:1?colour=blue", "colour"),
        ("nats://a:1?max_inflight_batches=51", "max_inflight_batches"),
        ("http://a:1", "nats://"),
    ],
)
def test_bad_url_is_refused_naming_the_problem(url: str, named: str) -> None:
    with pytest.raises(ValueError, match=named.replace("?", r"\?")):
        NatsSettings.from_url(url)


def test_every_stream_name_maps_to_its_own_subject_and_back() -> None:
    subjects = Subjects("EVENTLOG")
    names = ["checkout/pod-1", "a.b/c:d", "no-slash", "svc/", "/inst", "x/y/z", "ünï/cödé"]

    slots = [subjects.slot(name, 7) for name in names]

    assert len(set(slots)) == len(names)
    for name, slot in zip(names, slots, strict=True):
        assert " " not in slot and "*" not in slot and ">" not in slot
        assert slot.count(".") == 4
        assert subjects.stream_of(slot) == name


def test_service_and_instance_filters_become_subject_filters() -> None:
    subjects = Subjects("EVENTLOG")
    slot = subjects.slot("checkout/pod-1", 3)

    by_service = subjects.filter_for(EventFilter(service="checkout"))
    by_both = subjects.filter_for(EventFilter(service="checkout", instance="pod-1"))

    assert by_service is not None and by_both is not None
    assert slot.startswith(by_service[:-3]) and slot.startswith(by_both[:-1])
    assert subjects.filter_for(EventFilter(upstream="payments")) is None


def test_stored_body_round_trips_every_field() -> None:
    event = StreamFactory("checkout", "pod-1").transition(
        "payments", trace_id="4bf92f3577b34da6a3ce929d0e0e4736"
    )

    stored = decode_event(encode_event(event, recorded_at_ns=99), 12)

    assert stored.as_new_event() == event
    assert (stored.global_position, stored.recorded_at_ns) == (12, 99)


def test_truncated_or_padded_body_is_refused() -> None:
    body = encode_event(StreamFactory().transition(), recorded_at_ns=1)

    for broken in (body[:10], body[:-1], body + b"x"):
        with pytest.raises(StoreError, match="position 5"):
            decode_event(broken, 5)


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.EVENTLOG.consumer1.1.42.7.1700000000000000000.0",
        "$JS.ACK._.ACCOUNTHASH.EVENTLOG.consumer1.1.42.7.1700000000000000000.0.a1b2",
        "$JS.ACK.hub.ACCOUNTHASH.EVENTLOG.consumer1.1.42.7.1700000000000000000.0",
    ],
    ids=["v1", "v2", "v2 without token"],
)
def test_the_stream_sequence_is_read_from_either_form_of_a_delivery_reply(reply: str) -> None:
    assert stream_sequence(reply) == 42


def test_a_delivery_without_a_jetstream_reply_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="unexpected reply"):
        stream_sequence("_INBOX.abc")
