import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from sidecar.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListBreakersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBreakersResponse(_message.Message):
    __slots__ = ("breakers",)
    BREAKERS_FIELD_NUMBER: _ClassVar[int]
    breakers: _containers.RepeatedCompositeFieldContainer[BreakerInfo]
    def __init__(self, breakers: _Optional[_Iterable[_Union[BreakerInfo, _Mapping]]] = ...) -> None: ...

class GetBreakerRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class SetBreakerModeRequest(_message.Message):
    __slots__ = ("name", "mode")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    name: str
    mode: _events_pb2.BreakerMode
    def __init__(self, name: _Optional[str] = ..., mode: _Optional[_Union[_events_pb2.BreakerMode, str]] = ...) -> None: ...

class LastTransition(_message.Message):
    __slots__ = ("from_state", "to_state", "reason", "at")
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    from_state: _events_pb2.BreakerState
    to_state: _events_pb2.BreakerState
    reason: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, from_state: _Optional[_Union[_events_pb2.BreakerState, str]] = ..., to_state: _Optional[_Union[_events_pb2.BreakerState, str]] = ..., reason: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class BreakerInfo(_message.Message):
    __slots__ = ("name", "upstream", "state", "mode", "window", "open_until", "trip_streak", "last_transition", "half_open_in_flight", "open_duration_ms", "concurrency")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    OPEN_UNTIL_FIELD_NUMBER: _ClassVar[int]
    TRIP_STREAK_FIELD_NUMBER: _ClassVar[int]
    LAST_TRANSITION_FIELD_NUMBER: _ClassVar[int]
    HALF_OPEN_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    OPEN_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    name: str
    upstream: str
    state: _events_pb2.BreakerState
    mode: _events_pb2.BreakerMode
    window: _events_pb2.WindowSnapshot
    open_until: _timestamp_pb2.Timestamp
    trip_streak: int
    last_transition: LastTransition
    half_open_in_flight: int
    open_duration_ms: int
    concurrency: ConcurrencyLimit
    def __init__(self, name: _Optional[str] = ..., upstream: _Optional[str] = ..., state: _Optional[_Union[_events_pb2.BreakerState, str]] = ..., mode: _Optional[_Union[_events_pb2.BreakerMode, str]] = ..., window: _Optional[_Union[_events_pb2.WindowSnapshot, _Mapping]] = ..., open_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., trip_streak: _Optional[int] = ..., last_transition: _Optional[_Union[LastTransition, _Mapping]] = ..., half_open_in_flight: _Optional[int] = ..., open_duration_ms: _Optional[int] = ..., concurrency: _Optional[_Union[ConcurrencyLimit, _Mapping]] = ...) -> None: ...

class ConcurrencyLimit(_message.Message):
    __slots__ = ("in_flight", "max_concurrent_requests", "overflows")
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    OVERFLOWS_FIELD_NUMBER: _ClassVar[int]
    in_flight: int
    max_concurrent_requests: int
    overflows: int
    def __init__(self, in_flight: _Optional[int] = ..., max_concurrent_requests: _Optional[int] = ..., overflows: _Optional[int] = ...) -> None: ...
