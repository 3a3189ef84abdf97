"""The enum fields of the event payloads, found by walking the message descriptors.

Protobuf 3 enums are open: a field holds any 32-bit number, whether or not the ``.proto``
names it, and parsing keeps it. So a stored event may carry a value this build has no name for
(stored before Append checked enums, or by a newer producer). Two jobs need every enum field
of every payload, present and future, without a list kept by hand:

- Append refuses an event with an enum value its proto does not define
  (:func:`unknown_enum_values`, used by :mod:`sidecar.eventlog.api.validation`);
- readers (projections, metrics, ``sidecar events query|tail``) show such a value as
  ``UNKNOWN(99)`` (:func:`unknown_label`) and count it per field (:func:`event_enum_fields`
  lists the fields, so the counts can start at 0).

Field paths are the proto field names from the payload's oneof field down
(``breaker_transitioned.to_state``); a repeated field or a map adds its index or key in a
problem's path (``items[2].kind``) but not in the field name counts are kept under.

Pure functions on descriptors and messages: no I/O, safe from any thread. The walk of a message
type is planned once and cached; messages with no enum anywhere below are skipped at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from sidecar.breaker_protos import MODE_NAMES, STATE_NAMES
from sidecar.v1 import events_pb2

PAYLOAD_ONEOF: Final = "payload"
"""The oneof of ``Event`` holding the typed payload."""


@dataclass(frozen=True, slots=True)
class UnknownEnumValue:
    """One enum value the proto does not define, where it was found."""

    path: str
    """Where in the message, indexes and keys included: ``items[2].kind``."""
    field: str
    """The field, without indexes: ``items.kind`` (what counts are kept under)."""
    value: int
    enum: str
    """Full name of the enum type: ``sidecar.v1.BreakerState``."""

    def problem(self) -> str:
        return f"unknown enum value {self.value} (not a value of {self.enum})"


@dataclass(frozen=True, slots=True)
class _EnumField:
    name: str
    repeated: bool
    known: frozenset[int]
    enum: str


@dataclass(frozen=True, slots=True)
class _MessageField:
    name: str
    repeated: bool
    map_value: FieldDescriptor | None
    """For a map field: the entry's ``value`` field (a map's keys are never enums)."""
    descriptor: Descriptor


@dataclass(frozen=True, slots=True)
class _Plan:
    enums: tuple[_EnumField, ...]
    messages: tuple[_MessageField, ...]


_PLANS: dict[str, _Plan | None] = {}
def unknown_label(value: int) -> str:
    """How a reader shows an enum value it has no name for."""
    return f"UNKNOWN({value})"


def enum_label(enum: EnumDescriptor, value: int, prefix: str = "") -> str:
    """The value's name without ``prefix`` (``BREAKER_STATE_OPEN`` → ``OPEN``), or
    ``UNKNOWN(99)`` for a value ``enum`` does not define."""
    named = enum.values_by_number.get(value)
    return named.name.removeprefix(prefix) if named is not None else unknown_label(value)


def breaker_state_label(value: int) -> str:
    """``BREAKER_STATE_HALF_OPEN`` → ``HALF_OPEN``, ``UNKNOWN(99)`` for an undefined value: the
    names come from the one map, :data:`sidecar.breaker_protos.STATE_NAMES`."""
    return STATE_NAMES.get(value) or unknown_label(value)


def breaker_mode_label(value: int) -> str:
    """``BREAKER_MODE_METRICS_ONLY`` → ``METRICS_ONLY``, ``UNKNOWN(99)`` for an undefined value."""
    return MODE_NAMES.get(value) or unknown_label(value)


def _is_map(field: FieldDescriptor) -> bool:
    message_type = field.message_type
    return bool(message_type is not None and message_type.GetOptions().map_entry)


def _reachable(descriptor: Descriptor) -> Iterator[Descriptor]:
    """Every message type a message of this type can hold, itself included (cycles visited
    once)."""
    seen: set[str] = set()
    stack = [descriptor]
    while stack:
        desc = stack.pop()
        if desc.full_name in seen:
            continue
        seen.add(desc.full_name)
        yield desc
        stack.extend(f.message_type for f in desc.fields if f.type == FieldDescriptor.TYPE_MESSAGE)


_HOLDS_ENUMS: dict[str, bool] = {}


def _holds_enums(descriptor: Descriptor) -> bool:
    """Whether a message of this type can hold an enum value anywhere below."""
    name = descriptor.full_name
    if name not in _HOLDS_ENUMS:
        _HOLDS_ENUMS[name] = any(
            f.type == FieldDescriptor.TYPE_ENUM for d in _reachable(descriptor) for f in d.fields
        )
    return _HOLDS_ENUMS[name]


def _plan(descriptor: Descriptor) -> _Plan | None:
    """What to look at in a message of this type; None when no enum is anywhere below."""
    name = descriptor.full_name
    if name in _PLANS:
        return _PLANS[name]
    enums: list[_EnumField] = []
    messages: list[_MessageField] = []
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_ENUM:
            enum = field.enum_type
            enums.append(_EnumField(field.name, field.is_repeated,
                                    frozenset(enum.values_by_number), enum.full_name))
        elif field.type == FieldDescriptor.TYPE_MESSAGE and _holds_enums(field.message_type):
            value = field.message_type.fields_by_name["value"] if _is_map(field) else None
            messages.append(_MessageField(field.name, field.is_repeated, value,
                                          field.message_type))
    plan = _Plan(tuple(enums), tuple(messages)) if enums or messages else None
    _PLANS[name] = plan
    return plan


def unknown_enum_values(message: Message) -> list[UnknownEnumValue]:
    """Every enum value set in ``message`` (nested messages, repeated fields and maps
    included) that its enum type does not define, in field order."""
    return list(_walk(message, "", ""))


def _walk(message: Message, path: str, field_path: str) -> Iterator[UnknownEnumValue]:
    plan = _plan(message.DESCRIPTOR)
    if plan is None:
        return
    for enum in plan.enums:
        here, name = f"{path}{enum.name}", f"{field_path}{enum.name}"
        value: Any = getattr(message, enum.name)
        if enum.repeated:
            for index, item in enumerate(value):
                if item not in enum.known:
                    yield UnknownEnumValue(f"{here}[{index}]", name, int(item), enum.enum)
        elif value not in enum.known:
            yield UnknownEnumValue(here, name, int(value), enum.enum)
    for sub in plan.messages:
        here, name = f"{path}{sub.name}", f"{field_path}{sub.name}"
        if sub.map_value is not None:
            yield from _walk_map(getattr(message, sub.name), sub.map_value, here, name)
        elif sub.repeated:
            for index, item in enumerate(getattr(message, sub.name)):
                yield from _walk(item, f"{here}[{index}].", f"{name}.")
        elif message.HasField(sub.name):
            yield from _walk(getattr(message, sub.name), f"{here}.", f"{name}.")


def _walk_map(entries: Any, value_field: FieldDescriptor, path: str,
              field_path: str) -> Iterator[UnknownEnumValue]:
    for key in sorted(entries):
        item = entries[key]
        if value_field.type == FieldDescriptor.TYPE_ENUM:
            if item not in value_field.enum_type.values_by_number:
                yield UnknownEnumValue(f"{path}[{key!r}]", field_path, int(item),
                                       value_field.enum_type.full_name)
        else:
            yield from _walk(item, f"{path}[{key!r}].", f"{field_path}.")


def enum_fields(descriptor: Descriptor) -> tuple[str, ...]:
    """Every enum field path below a message type, without indexes, sorted."""
    found: list[str] = []

    def visit(desc: Descriptor, prefix: str, seen: frozenset[str]) -> None:
        if desc.full_name in seen:
            return
        seen = seen | {desc.full_name}
        for field in desc.fields:
            if field.type == FieldDescriptor.TYPE_ENUM:
                found.append(f"{prefix}{field.name}")
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                target = field.message_type
                if _is_map(field):
                    value = target.fields_by_name["value"]
                    if value.type == FieldDescriptor.TYPE_ENUM:
                        found.append(f"{prefix}{field.name}")
                        continue
                    if value.type != FieldDescriptor.TYPE_MESSAGE:
                        continue
                    target = value.message_type
                visit(target, f"{prefix}{field.name}.", seen)

    visit(descriptor, "", frozenset())
    return tuple(sorted(found))


def event_enum_fields() -> tuple[str, ...]:
    """Every enum field of every payload of ``Event``: ``breaker_transitioned.to_state``, ...
    (from the descriptors, so a payload added to the proto is covered without a change here)."""
    oneof = events_pb2.Event.DESCRIPTOR.oneofs_by_name[PAYLOAD_ONEOF]
    return tuple(sorted(
        f"{field.name}.{path}" for field in oneof.fields for path in enum_fields(field.message_type)
    ))
