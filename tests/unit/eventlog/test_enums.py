"""The descriptor walk that finds enum values a proto does not define: it reaches enums in
nested messages, repeated fields and maps, so a payload added later needs no list kept by hand.
The shapes events.proto does not use yet are tried on a message type built here."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from sidecar.eventlog.enums import (
    enum_fields,
    enum_label,
    event_enum_fields,
    unknown_enum_values,
    unknown_label,
)
from sidecar.v1 import events_pb2


def _shapes() -> Any:
    """``test.Outer`` with an enum, a repeated enum, a nested message holding an enum (single
    and repeated), a map to enums, a map to messages, and a recursive field."""
    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="shapes.proto", package="test",
                                              syntax="proto3")
    color = file.enum_type.add(name="Color")
    color.value.add(name="COLOR_UNSPECIFIED", number=0)
    color.value.add(name="COLOR_RED", number=1)
    inner = file.message_type.add(name="Inner")
    inner.field.add(name="color", number=1, type=F.TYPE_ENUM, type_name=".test.Color",
                    label=F.LABEL_OPTIONAL)
    inner.field.add(name="note", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    plain = file.message_type.add(name="Plain")
    plain.field.add(name="n", number=1, type=F.TYPE_UINT32, label=F.LABEL_OPTIONAL)
    outer = file.message_type.add(name="Outer")
    for entry_name, value_type, value_type_name in (
        ("ColorsEntry", F.TYPE_ENUM, ".test.Color"),
        ("InnersEntry", F.TYPE_MESSAGE, ".test.Inner"),
    ):
        entry = outer.nested_type.add(name=entry_name)
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
        entry.field.add(name="value", number=2, type=value_type, type_name=value_type_name,
                        label=F.LABEL_OPTIONAL)
    fields = [
        ("color", F.TYPE_ENUM, ".test.Color", F.LABEL_OPTIONAL),
        ("colors", F.TYPE_ENUM, ".test.Color", F.LABEL_REPEATED),
        ("inner", F.TYPE_MESSAGE, ".test.Inner", F.LABEL_OPTIONAL),
        ("inners", F.TYPE_MESSAGE, ".test.Inner", F.LABEL_REPEATED),
        ("by_name", F.TYPE_MESSAGE, ".test.Outer.ColorsEntry", F.LABEL_REPEATED),
        ("inner_by_name", F.TYPE_MESSAGE, ".test.Outer.InnersEntry", F.LABEL_REPEATED),
        ("plain", F.TYPE_MESSAGE, ".test.Plain", F.LABEL_OPTIONAL),
        ("child", F.TYPE_MESSAGE, ".test.Outer", F.LABEL_OPTIONAL),
    ]
    for number, (name, kind, type_name, label) in enumerate(fields, start=1):
        outer.field.add(name=name, number=number, type=kind, type_name=type_name, label=label)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("test.Outer"))


Outer = _shapes()


def test_a_message_with_only_defined_values_has_none_unknown() -> None:
    message = Outer(color=1, colors=[0, 1])
    message.inner.color = 1
    message.by_name["a"] = 1

    assert unknown_enum_values(message) == []


def test_unknown_values_are_found_wherever_they_sit_with_paths_and_field_names() -> None:
    message = Outer(color=7, colors=[1, 8, 0, 9])
    message.inner.color = 10
    message.inners.add(color=1)
    message.inners.add(color=11)
    message.by_name["b"] = 12
    message.by_name["a"] = 1
    message.inner_by_name["x"].color = 13
    message.child.inner.color = 14
    message.plain.n = 99  # not an enum: never reported

    found = [(u.path, u.field, u.value) for u in unknown_enum_values(message)]

    assert found == [
        ("color", "color", 7),
        ("colors[1]", "colors", 8),
        ("colors[3]", "colors", 9),
        ("inner.color", "inner.color", 10),
        ("inners[1].color", "inners.color", 11),
        ("by_name['b']", "by_name", 12),
        ("inner_by_name['x'].color", "inner_by_name.color", 13),
        ("child.inner.color", "child.inner.color", 14),
    ]
    assert unknown_enum_values(message)[0].problem() == (
        "unknown enum value 7 (not a value of test.Color)")


def test_enum_fields_lists_every_path_once_even_through_a_recursive_type() -> None:
    assert enum_fields(Outer.DESCRIPTOR) == (
        "by_name", "color", "colors", "inner.color", "inner_by_name.color", "inners.color",
    )


def test_the_event_payloads_enum_fields_come_from_the_envelope_oneof() -> None:
    oneof = events_pb2.Event.DESCRIPTOR.oneofs_by_name["payload"]
    expected = {f"{f.name}.{path}" for f in oneof.fields for path in enum_fields(f.message_type)}

    assert set(event_enum_fields()) == expected
    assert "endpoint_ejected.reason" in expected
    assert "breaker_transitioned.window" not in " ".join(expected)


def test_labels_name_known_values_and_show_unknown_ones_as_unknown() -> None:
    state = events_pb2.BreakerState.DESCRIPTOR

    assert enum_label(state, events_pb2.BREAKER_STATE_OPEN, "BREAKER_STATE_") == "OPEN"
    assert enum_label(state, 99, "BREAKER_STATE_") == "UNKNOWN(99)"
    assert unknown_label(-3) == "UNKNOWN(-3)"
