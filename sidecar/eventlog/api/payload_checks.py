"""Checks of an event's typed payload, one function per payload type, and of every enum field.

:mod:`sidecar.eventlog.api.validation` checks the envelope and that the payload's ``service`` and
``instance`` are the stream's; :func:`check_payload` does the rest:

- every enum value set anywhere in the payload is one its proto defines (found by walking the
  descriptors, :mod:`sidecar.eventlog.enums`, so a payload added later is covered too):
  ``breaker_transitioned.to_state: unknown enum value 99 (...)``;
- ``BreakerTransitioned``, ``BreakerModeChanged``: ``upstream`` set, names bounded;
- ``EndpointsChanged``: ``upstream`` set; ``added``/``removed`` each a ``HOST:PORT``, none
  twice, none both added and removed, at most ``MAX_UPSTREAM_ENDPOINTS``; ``count`` (endpoints
  after the change) at least the added ones and at most ``MAX_UPSTREAM_ENDPOINTS``;
- ``EndpointEjected``: ``upstream`` set; ``endpoint`` a ``HOST:PORT``; ``reason`` not
  UNSPECIFIED; ``ejection_ms`` at most ``MAX_DURATION_MS``; ``ejections_in_a_row`` >= 1 (the
  count after this ejection); ``failure_rate`` in [0, 1]; a failure-rate ejection has calls, a
  consecutive-failures one has failures;
- ``EndpointReturned``: ``upstream`` set; ``endpoint`` a ``HOST:PORT``; ``ejected_for_ms`` at
  most ``MAX_DURATION_MS``;
- ``LoadShedding``: ``upstream`` set; ``phase`` one of ``SHEDDING_PHASES``; ``limit`` >= 1;
  ``algorithm`` set; ``duration_ms`` at most ``MAX_DURATION_MS`` and 0 on "started";
- ``LogRollbackDetected``: ``stream`` set; ``reason`` one of ``ROLLBACK_REASONS``;
  ``found_version`` below ``acknowledged_version`` for "head_behind"; ``lost`` at most
  ``acknowledged_version``.

A payload type without its own function (one added to the proto later) gets the generic
checks: enums, and ``upstream`` set when the message has one.

Pure functions; :class:`InvalidField` names the field path as the client wrote it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Final

from sidecar.eventlog.enums import unknown_enum_values
from sidecar.v1 import events_pb2

MAX_NAME_CHARS: Final = 256
"""Longest upstream / breaker / source / type filter value."""
MAX_UPSTREAM_ENDPOINTS: Final = 65_536
"""Most endpoints one upstream may have (``EndpointsChanged.count`` and its lists)."""
MAX_ENDPOINT_CHARS: Final = 261
"""Longest ``HOST:PORT``: a 253-character DNS name, or a bracketed IPv6 address, and a port."""
MAX_DURATION_MS: Final = 366 * 24 * 3600 * 1000
"""Longest ejection (or time ejected) an event may report: a year. Anything longer is a unit
or overflow mistake, not an ejection."""

SHEDDING_PHASES: Final = ("started", "stopped")
"""``LoadShedding.phase`` values: a shedding period begins or ends."""
ROLLBACK_REASONS: Final = ("head_behind", "hash_mismatch")
"""``LogRollbackDetected.reason`` values."""

_PORT_RE: Final = re.compile(r"[0-9]{1,5}")
_HOST_RE: Final = re.compile(r"\[[0-9A-Fa-f:.]+(?:%[A-Za-z0-9._-]+)?\]|[A-Za-z0-9._:-]+")
"""A DNS name, an IPv4 address, an IPv6 address (bracketed, with an optional zone, or bare as
the config's ``HOST:PORT`` split accepts it)."""


class InvalidField(ValueError):
    """A request field is malformed. ``str()`` is ``"<field>: <problem>"``."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def short(value: str, limit: int = 60) -> str:
    """``repr`` of ``value``, cut after ``limit`` characters (for problem texts)."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def check_name(value: str, field: str, *, required: bool) -> None:
    if not value:
        if required:
            raise InvalidField(field, "must not be empty")
        return
    if len(value) > MAX_NAME_CHARS:
        raise InvalidField(field, f"is {len(value)} characters long (max {MAX_NAME_CHARS})")


def check_endpoint(value: str, field: str) -> None:
    """``HOST:PORT`` with a port from 1 to 65535 and a host of name or address characters."""
    host, sep, port = value.rpartition(":")
    if (
        not sep
        or len(value) > MAX_ENDPOINT_CHARS
        or not _PORT_RE.fullmatch(port)
        or not 1 <= int(port) <= 65535
        or not _HOST_RE.fullmatch(host)
    ):
        raise InvalidField(
            field, f"must be HOST:PORT with a port from 1 to 65535, got {short(value)}"
        )


def _check_duration_ms(value: int, field: str) -> None:
    if value > MAX_DURATION_MS:
        raise InvalidField(field, f"{value} ms is more than a year (max {MAX_DURATION_MS})")


def _check_endpoint_list(values: Sequence[str], field: str) -> set[str]:
    if len(values) > MAX_UPSTREAM_ENDPOINTS:
        raise InvalidField(field, f"lists {len(values)} endpoints (max {MAX_UPSTREAM_ENDPOINTS})")
    seen: dict[str, int] = {}
    for index, value in enumerate(values):
        check_endpoint(value, f"{field}[{index}]")
        first = seen.setdefault(value, index)
        if first != index:
            raise InvalidField(f"{field}[{index}]", f"{short(value)} already at [{first}]")
    return set(seen)


def _breaker(payload: Any, field: str) -> str:
    check_name(payload.upstream, f"{field}.upstream", required=True)
    check_name(payload.breaker, f"{field}.breaker", required=False)
    return str(payload.upstream)


def _config_applied(payload: Any, field: str) -> str:
    return ""  # names several upstreams: no upstream filter column


def _endpoints_changed(payload: events_pb2.EndpointsChanged, field: str) -> str:
    check_name(payload.upstream, f"{field}.upstream", required=True)
    added = _check_endpoint_list(payload.added, f"{field}.added")
    _check_endpoint_list(payload.removed, f"{field}.removed")
    for index, value in enumerate(payload.removed):
        if value in added:
            raise InvalidField(f"{field}.removed[{index}]", f"{short(value)} is also added")
    if not len(added) <= payload.count <= MAX_UPSTREAM_ENDPOINTS:
        raise InvalidField(
            f"{field}.count",
            f"{payload.count} endpoints after the change must be at least the {len(added)} "
            f"added and at most {MAX_UPSTREAM_ENDPOINTS}",
        )
    check_name(payload.source, f"{field}.source", required=False)
    return payload.upstream


def _endpoint_ejected(payload: events_pb2.EndpointEjected, field: str) -> str:
    check_name(payload.upstream, f"{field}.upstream", required=True)
    check_endpoint(payload.endpoint, f"{field}.endpoint")
    reason = payload.reason
    if reason == events_pb2.EJECTION_REASON_UNSPECIFIED:
        raise InvalidField(f"{field}.reason", "must be set (not EJECTION_REASON_UNSPECIFIED)")
    _check_duration_ms(payload.ejection_ms, f"{field}.ejection_ms")
    if payload.ejections_in_a_row < 1:
        raise InvalidField(f"{field}.ejections_in_a_row",
                           "must be >= 1 (ejections in a row, this one included)")
    rate = payload.failure_rate
    if not (math.isfinite(rate) and 0.0 <= rate <= 1.0):
        raise InvalidField(f"{field}.failure_rate", f"must be in [0, 1], got {rate!r}")
    if reason == events_pb2.EJECTION_REASON_FAILURE_RATE and payload.calls < 1:
        raise InvalidField(f"{field}.calls", "must be >= 1 for a FAILURE_RATE ejection")
    if (
        reason == events_pb2.EJECTION_REASON_CONSECUTIVE_FAILURES
        and payload.consecutive_failures < 1
    ):
        raise InvalidField(f"{field}.consecutive_failures",
                           "must be >= 1 for a CONSECUTIVE_FAILURES ejection")
    return payload.upstream


def _endpoint_returned(payload: events_pb2.EndpointReturned, field: str) -> str:
    check_name(payload.upstream, f"{field}.upstream", required=True)
    check_endpoint(payload.endpoint, f"{field}.endpoint")
    _check_duration_ms(payload.ejected_for_ms, f"{field}.ejected_for_ms")
    return payload.upstream


def _check_one_of(value: str, allowed: Sequence[str], field: str) -> None:
    if value not in allowed:
        raise InvalidField(field, f"must be one of {', '.join(allowed)}, got {short(value)!r}")


def _load_shedding(payload: events_pb2.LoadShedding, field: str) -> str:
    check_name(payload.upstream, f"{field}.upstream", required=True)
    _check_one_of(payload.phase, SHEDDING_PHASES, f"{field}.phase")
    if payload.limit < 1:
        raise InvalidField(f"{field}.limit", "must be >= 1 (the adaptive limit never goes below 1)")
    check_name(payload.algorithm, f"{field}.algorithm", required=True)
    _check_duration_ms(payload.duration_ms, f"{field}.duration_ms")
    if payload.phase == "started" and payload.duration_ms:
        raise InvalidField(f"{field}.duration_ms", "must be 0 when a period starts")
    return payload.upstream


def _log_rollback_detected(payload: events_pb2.LogRollbackDetected, field: str) -> str:
    check_name(payload.stream, f"{field}.stream", required=True)
    _check_one_of(payload.reason, ROLLBACK_REASONS, f"{field}.reason")
    if payload.reason == "head_behind" and payload.found_version >= payload.acknowledged_version:
        raise InvalidField(
            f"{field}.found_version",
            f"{payload.found_version} is not behind the acknowledged "
            f"{payload.acknowledged_version} (reason head_behind)",
        )
    if payload.lost > payload.acknowledged_version:
        raise InvalidField(f"{field}.lost", f"{payload.lost} is more than the "
                           f"{payload.acknowledged_version} acknowledged events")
    return ""


def _generic(payload: Any, field: str) -> str:
    if "upstream" not in payload.DESCRIPTOR.fields_by_name:
        return ""
    check_name(payload.upstream, f"{field}.upstream", required=True)
    return str(payload.upstream)


_CHECKS: Final[dict[str, Callable[[Any, str], str]]] = {
    "breaker_transitioned": _breaker,
    "breaker_mode_changed": _breaker,
    "config_applied": _config_applied,
    "endpoints_changed": _endpoints_changed,
    "endpoint_ejected": _endpoint_ejected,
    "endpoint_returned": _endpoint_returned,
    "load_shedding": _load_shedding,
    "log_rollback_detected": _log_rollback_detected,
}


def check_payload(which: str, payload: Any, field: str) -> str:
    """Check the payload in oneof field ``which`` (see the module docstring); returns its
    upstream filter column ("" for a payload without one). ``field`` is the event's path
    (``events[3]``)."""
    where = f"{field}.{which}"
    unknown = unknown_enum_values(payload)
    if unknown:
        raise InvalidField(f"{where}.{unknown[0].path}", unknown[0].problem())
    return _CHECKS.get(which, _generic)(payload, where)
