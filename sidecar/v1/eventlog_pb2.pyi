import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from sidecar.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AppendRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_events_pb2.Event]
    def __init__(self, events: _Optional[_Iterable[_Union[_events_pb2.Event, _Mapping]]] = ...) -> None: ...

class AppendResult(_message.Message):
    __slots__ = ("event_id", "global_position", "version", "duplicate")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_POSITION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    global_position: int
    version: int
    duplicate: bool
    def __init__(self, event_id: _Optional[str] = ..., global_position: _Optional[int] = ..., version: _Optional[int] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class AppendResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AppendResult]
    def __init__(self, results: _Optional[_Iterable[_Union[AppendResult, _Mapping]]] = ...) -> None: ...

class ReadStreamRequest(_message.Message):
    __slots__ = ("stream", "from_version", "limit")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    stream: str
    from_version: int
    limit: int
    def __init__(self, stream: _Optional[str] = ..., from_version: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ReadStreamResponse(_message.Message):
    __slots__ = ("events", "next_version", "retention_anchor_version", "retention_anchor_hash")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_VERSION_FIELD_NUMBER: _ClassVar[int]
    RETENTION_ANCHOR_VERSION_FIELD_NUMBER: _ClassVar[int]
    RETENTION_ANCHOR_HASH_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_events_pb2.Event]
    next_version: int
    retention_anchor_version: int
    retention_anchor_hash: bytes
    def __init__(self, events: _Optional[_Iterable[_Union[_events_pb2.Event, _Mapping]]] = ..., next_version: _Optional[int] = ..., retention_anchor_version: _Optional[int] = ..., retention_anchor_hash: _Optional[bytes] = ...) -> None: ...

class EventFilter(_message.Message):
    __slots__ = ("service", "instance", "upstream", "types", "from_time", "to_time")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    FROM_TIME_FIELD_NUMBER: _ClassVar[int]
    TO_TIME_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance: str
    upstream: str
    types: _containers.RepeatedScalarFieldContainer[str]
    from_time: _timestamp_pb2.Timestamp
    to_time: _timestamp_pb2.Timestamp
    def __init__(self, service: _Optional[str] = ..., instance: _Optional[str] = ..., upstream: _Optional[str] = ..., types: _Optional[_Iterable[str]] = ..., from_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., to_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReadAllRequest(_message.Message):
    __slots__ = ("from_position", "limit", "filter")
    FROM_POSITION_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    from_position: int
    limit: int
    filter: EventFilter
    def __init__(self, from_position: _Optional[int] = ..., limit: _Optional[int] = ..., filter: _Optional[_Union[EventFilter, _Mapping]] = ...) -> None: ...

class ReadAllResponse(_message.Message):
    __slots__ = ("events", "next_position", "head_position")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_POSITION_FIELD_NUMBER: _ClassVar[int]
    HEAD_POSITION_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_events_pb2.Event]
    next_position: int
    head_position: int
    def __init__(self, events: _Optional[_Iterable[_Union[_events_pb2.Event, _Mapping]]] = ..., next_position: _Optional[int] = ..., head_position: _Optional[int] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("from_position", "filter", "heartbeat_interval_ms")
    FROM_POSITION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    from_position: int
    filter: EventFilter
    heartbeat_interval_ms: int
    def __init__(self, from_position: _Optional[int] = ..., filter: _Optional[_Union[EventFilter, _Mapping]] = ..., heartbeat_interval_ms: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("head_position", "resume_position")
    HEAD_POSITION_FIELD_NUMBER: _ClassVar[int]
    RESUME_POSITION_FIELD_NUMBER: _ClassVar[int]
    head_position: int
    resume_position: int
    def __init__(self, head_position: _Optional[int] = ..., resume_position: _Optional[int] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("event", "heartbeat")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    event: _events_pb2.Event
    heartbeat: Heartbeat
    def __init__(self, event: _Optional[_Union[_events_pb2.Event, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class GetBreakerStatusRequest(_message.Message):
    __slots__ = ("service", "upstream")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    service: str
    upstream: str
    def __init__(self, service: _Optional[str] = ..., upstream: _Optional[str] = ...) -> None: ...

class ListBreakerStatusRequest(_message.Message):
    __slots__ = ("service", "upstream")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    service: str
    upstream: str
    def __init__(self, service: _Optional[str] = ..., upstream: _Optional[str] = ...) -> None: ...

class TransitionCount(_message.Message):
    __slots__ = ("from_state", "to_state", "count")
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    from_state: _events_pb2.BreakerState
    to_state: _events_pb2.BreakerState
    count: int
    def __init__(self, from_state: _Optional[_Union[_events_pb2.BreakerState, str]] = ..., to_state: _Optional[_Union[_events_pb2.BreakerState, str]] = ..., count: _Optional[int] = ...) -> None: ...

class InstanceBreakerStatus(_message.Message):
    __slots__ = ("service", "instance", "upstream", "state", "open_since", "transitions", "seconds_open", "mean_time_to_recover_s", "recoveries", "last_transition_at", "transition_counts")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    OPEN_SINCE_FIELD_NUMBER: _ClassVar[int]
    TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_OPEN_FIELD_NUMBER: _ClassVar[int]
    MEAN_TIME_TO_RECOVER_S_FIELD_NUMBER: _ClassVar[int]
    RECOVERIES_FIELD_NUMBER: _ClassVar[int]
    LAST_TRANSITION_AT_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_COUNTS_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance: str
    upstream: str
    state: _events_pb2.BreakerState
    open_since: _timestamp_pb2.Timestamp
    transitions: int
    seconds_open: float
    mean_time_to_recover_s: float
    recoveries: int
    last_transition_at: _timestamp_pb2.Timestamp
    transition_counts: _containers.RepeatedCompositeFieldContainer[TransitionCount]
    def __init__(self, service: _Optional[str] = ..., instance: _Optional[str] = ..., upstream: _Optional[str] = ..., state: _Optional[_Union[_events_pb2.BreakerState, str]] = ..., open_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., transitions: _Optional[int] = ..., seconds_open: _Optional[float] = ..., mean_time_to_recover_s: _Optional[float] = ..., recoveries: _Optional[int] = ..., last_transition_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., transition_counts: _Optional[_Iterable[_Union[TransitionCount, _Mapping]]] = ...) -> None: ...

class UpstreamBreakerStatus(_message.Message):
    __slots__ = ("service", "upstream", "state", "open_since", "instances_open", "instances_known", "transitions", "seconds_open", "mean_time_to_recover_s", "recoveries", "transition_counts", "instances")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    OPEN_SINCE_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_OPEN_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_KNOWN_FIELD_NUMBER: _ClassVar[int]
    TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_OPEN_FIELD_NUMBER: _ClassVar[int]
    MEAN_TIME_TO_RECOVER_S_FIELD_NUMBER: _ClassVar[int]
    RECOVERIES_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_COUNTS_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    service: str
    upstream: str
    state: _events_pb2.BreakerState
    open_since: _timestamp_pb2.Timestamp
    instances_open: int
    instances_known: int
    transitions: int
    seconds_open: float
    mean_time_to_recover_s: float
    recoveries: int
    transition_counts: _containers.RepeatedCompositeFieldContainer[TransitionCount]
    instances: _containers.RepeatedCompositeFieldContainer[InstanceBreakerStatus]
    def __init__(self, service: _Optional[str] = ..., upstream: _Optional[str] = ..., state: _Optional[_Union[_events_pb2.BreakerState, str]] = ..., open_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., instances_open: _Optional[int] = ..., instances_known: _Optional[int] = ..., transitions: _Optional[int] = ..., seconds_open: _Optional[float] = ..., mean_time_to_recover_s: _Optional[float] = ..., recoveries: _Optional[int] = ..., transition_counts: _Optional[_Iterable[_Union[TransitionCount, _Mapping]]] = ..., instances: _Optional[_Iterable[_Union[InstanceBreakerStatus, _Mapping]]] = ...) -> None: ...

class ListBreakerStatusResponse(_message.Message):
    __slots__ = ("breakers", "projection_position", "head_position")
    BREAKERS_FIELD_NUMBER: _ClassVar[int]
    PROJECTION_POSITION_FIELD_NUMBER: _ClassVar[int]
    HEAD_POSITION_FIELD_NUMBER: _ClassVar[int]
    breakers: _containers.RepeatedCompositeFieldContainer[UpstreamBreakerStatus]
    projection_position: int
    head_position: int
    def __init__(self, breakers: _Optional[_Iterable[_Union[UpstreamBreakerStatus, _Mapping]]] = ..., projection_position: _Optional[int] = ..., head_position: _Optional[int] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VerifyBreak(_message.Message):
    __slots__ = ("stream", "version", "global_position", "reason")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_POSITION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    stream: str
    version: int
    global_position: int
    reason: str
    def __init__(self, stream: _Optional[str] = ..., version: _Optional[int] = ..., global_position: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("ok", "events_checked", "streams_checked", "first_break")
    OK_FIELD_NUMBER: _ClassVar[int]
    EVENTS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    STREAMS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    FIRST_BREAK_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    events_checked: int
    streams_checked: int
    first_break: VerifyBreak
    def __init__(self, ok: _Optional[bool] = ..., events_checked: _Optional[int] = ..., streams_checked: _Optional[int] = ..., first_break: _Optional[_Union[VerifyBreak, _Mapping]] = ...) -> None: ...
