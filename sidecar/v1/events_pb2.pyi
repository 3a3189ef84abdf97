import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BreakerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BREAKER_STATE_UNSPECIFIED: _ClassVar[BreakerState]
    BREAKER_STATE_CLOSED: _ClassVar[BreakerState]
    BREAKER_STATE_OPEN: _ClassVar[BreakerState]
    BREAKER_STATE_HALF_OPEN: _ClassVar[BreakerState]

class BreakerMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BREAKER_MODE_UNSPECIFIED: _ClassVar[BreakerMode]
    BREAKER_MODE_ENFORCE: _ClassVar[BreakerMode]
    BREAKER_MODE_METRICS_ONLY: _ClassVar[BreakerMode]
    BREAKER_MODE_DISABLED: _ClassVar[BreakerMode]
    BREAKER_MODE_FORCED_OPEN: _ClassVar[BreakerMode]

class EjectionReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EJECTION_REASON_UNSPECIFIED: _ClassVar[EjectionReason]
    EJECTION_REASON_CONSECUTIVE_FAILURES: _ClassVar[EjectionReason]
    EJECTION_REASON_FAILURE_RATE: _ClassVar[EjectionReason]
BREAKER_STATE_UNSPECIFIED: BreakerState
BREAKER_STATE_CLOSED: BreakerState
BREAKER_STATE_OPEN: BreakerState
BREAKER_STATE_HALF_OPEN: BreakerState
BREAKER_MODE_UNSPECIFIED: BreakerMode
BREAKER_MODE_ENFORCE: BreakerMode
BREAKER_MODE_METRICS_ONLY: BreakerMode
BREAKER_MODE_DISABLED: BreakerMode
BREAKER_MODE_FORCED_OPEN: BreakerMode
EJECTION_REASON_UNSPECIFIED: EjectionReason
EJECTION_REASON_CONSECUTIVE_FAILURES: EjectionReason
EJECTION_REASON_FAILURE_RATE: EjectionReason

class WindowSnapshot(_message.Message):
    __slots__ = ("calls", "failures", "slow_calls", "failure_rate", "slow_call_rate", "consecutive_failures")
    CALLS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    SLOW_CALLS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_RATE_FIELD_NUMBER: _ClassVar[int]
    SLOW_CALL_RATE_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    calls: int
    failures: int
    slow_calls: int
    failure_rate: float
    slow_call_rate: float
    consecutive_failures: int
    def __init__(self, calls: _Optional[int] = ..., failures: _Optional[int] = ..., slow_calls: _Optional[int] = ..., failure_rate: _Optional[float] = ..., slow_call_rate: _Optional[float] = ..., consecutive_failures: _Optional[int] = ...) -> None: ...

class BreakerTransitioned(_message.Message):
    __slots__ = ("service", "instance", "upstream", "breaker", "from_state", "to_state", "reason", "window", "open_duration_ms", "trip_streak", "mode")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    OPEN_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    TRIP_STREAK_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance: str
    upstream: str
    breaker: str
    from_state: BreakerState
    to_state: BreakerState
    reason: str
    window: WindowSnapshot
    open_duration_ms: int
    trip_streak: int
    mode: BreakerMode
    def __init__(self, service: _Optional[str] = ..., instance: _Optional[str] = ..., upstream: _Optional[str] = ..., breaker: _Optional[str] = ..., from_state: _Optional[_Union[BreakerState, str]] = ..., to_state: _Optional[_Union[BreakerState, str]] = ..., reason: _Optional[str] = ..., window: _Optional[_Union[WindowSnapshot, _Mapping]] = ..., open_duration_ms: _Optional[int] = ..., trip_streak: _Optional[int] = ..., mode: _Optional[_Union[BreakerMode, str]] = ...) -> None: ...

class BreakerModeChanged(_message.Message):
    __slots__ = ("service", "instance", "upstream", "breaker", "from_mode", "to_mode", "source")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    FROM_MODE_FIELD_NUMBER: _ClassVar[int]
    TO_MODE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance: str
    upstream: str
    breaker: str
    from_mode: BreakerMode
    to_mode: BreakerMode
    source: str
    def __init__(self, service: _Optional[str] = ..., instance: _Optional[str] = ..., upstream: _Optional[str] = ..., breaker: _Optional[str] = ..., from_mode: _Optional[_Union[BreakerMode, str]] = ..., to_mode: _Optional[_Union[BreakerMode, str]] = ..., source: _Optional[str] = ...) -> None: ...

class ConfigApplied(_message.Message):
    __slots__ = ("service", "instance", "config_sha256", "upstreams", "source")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_SHA256_FIELD_NUMBER: _ClassVar[int]
    UPSTREAMS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance: str
    config_sha256: str
    upstreams: _containers.RepeatedScalarFieldContainer[str]
    source: str
    def __init__(self, service: _Optional[str] = ..., instance: _Optional[str] = ..., config_sha256: _Optional[str] = ..., upstreams: _Optional[_Iterable[str]] = ..., source: _Optional[str] = ...) -> None: ...

class EndpointsChanged(_message.Message):
    __slots__ = ("service", "instance", "upstream", "added", "removed", "count", "source")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance: str
    upstream: str
    added: _containers.RepeatedScalarFieldContainer[str]
    removed: _containers.RepeatedScalarFieldContainer[str]
    count: int
    source: str
    def __init__(self, service: _Optional[str] = ..., instance: _Optional[str] = ..., upstream: _Optional[str] = ..., added: _Optional[_Iterable[str]] = ..., removed: _Optional[_Iterable[str]] = ..., count: _Optional[int] = ..., source: _Optional[str] = ...) -> None: ...

class EndpointEjected(_message.Message):
    __slots__ = ("service", "instance", "upstream", "endpoint", "reason", "ejection_ms", "ejections_in_a_row", "consecutive_failures", "failure_rate", "calls")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EJECTION_MS_FIELD_NUMBER: _ClassVar[int]
    EJECTIONS_IN_A_ROW_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    FAILURE_RATE_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance: str
    upstream: str
    endpoint: str
    reason: EjectionReason
    ejection_ms: int
    ejections_in_a_row: int
    consecutive_failures: int
    failure_rate: float
    calls: int
    def __init__(self, service: _Optional[str] = ..., instance: _Optional[str] = ..., upstream: _Optional[str] = ..., endpoint: _Optional[str] = ..., reason: _Optional[_Union[EjectionReason, str]] = ..., ejection_ms: _Optional[int] = ..., ejections_in_a_row: _Optional[int] = ..., consecutive_failures: _Optional[int] = ..., failure_rate: _Optional[float] = ..., calls: _Optional[int] = ...) -> None: ...

class EndpointReturned(_message.Message):
    __slots__ = ("service", "instance", "upstream", "endpoint", "ejected_for_ms")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    EJECTED_FOR_MS_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance: str
    upstream: str
    endpoint: str
    ejected_for_ms: int
    def __init__(self, service: _Optional[str] = ..., instance: _Optional[str] = ..., upstream: _Optional[str] = ..., endpoint: _Optional[str] = ..., ejected_for_ms: _Optional[int] = ...) -> None: ...

class LoadShedding(_message.Message):
    __slots__ = ("service", "instance", "upstream", "phase", "limit", "in_flight", "shed", "algorithm", "duration_ms")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    SHED_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance: str
    upstream: str
    phase: str
    limit: int
    in_flight: int
    shed: int
    algorithm: str
    duration_ms: int
    def __init__(self, service: _Optional[str] = ..., instance: _Optional[str] = ..., upstream: _Optional[str] = ..., phase: _Optional[str] = ..., limit: _Optional[int] = ..., in_flight: _Optional[int] = ..., shed: _Optional[int] = ..., algorithm: _Optional[str] = ..., duration_ms: _Optional[int] = ...) -> None: ...

class LogRollbackDetected(_message.Message):
    __slots__ = ("service", "instance", "stream", "acknowledged_version", "found_version", "reshipped", "reason", "lost")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_VERSION_FIELD_NUMBER: _ClassVar[int]
    FOUND_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESHIPPED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance: str
    stream: str
    acknowledged_version: int
    found_version: int
    reshipped: int
    reason: str
    lost: int
    def __init__(self, service: _Optional[str] = ..., instance: _Optional[str] = ..., stream: _Optional[str] = ..., acknowledged_version: _Optional[int] = ..., found_version: _Optional[int] = ..., reshipped: _Optional[int] = ..., reason: _Optional[str] = ..., lost: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "stream", "version", "global_position", "type", "occurred_at", "recorded_at", "trace_id", "breaker_transitioned", "breaker_mode_changed", "config_applied", "endpoints_changed", "endpoint_ejected", "endpoint_returned", "load_shedding", "log_rollback_detected", "prev_hash", "hash")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_POSITION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    BREAKER_TRANSITIONED_FIELD_NUMBER: _ClassVar[int]
    BREAKER_MODE_CHANGED_FIELD_NUMBER: _ClassVar[int]
    CONFIG_APPLIED_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_EJECTED_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_RETURNED_FIELD_NUMBER: _ClassVar[int]
    LOAD_SHEDDING_FIELD_NUMBER: _ClassVar[int]
    LOG_ROLLBACK_DETECTED_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    stream: str
    version: int
    global_position: int
    type: str
    occurred_at: _timestamp_pb2.Timestamp
    recorded_at: _timestamp_pb2.Timestamp
    trace_id: str
    breaker_transitioned: BreakerTransitioned
    breaker_mode_changed: BreakerModeChanged
    config_applied: ConfigApplied
    endpoints_changed: EndpointsChanged
    endpoint_ejected: EndpointEjected
    endpoint_returned: EndpointReturned
    load_shedding: LoadShedding
    log_rollback_detected: LogRollbackDetected
    prev_hash: bytes
    hash: bytes
    def __init__(self, event_id: _Optional[str] = ..., stream: _Optional[str] = ..., version: _Optional[int] = ..., global_position: _Optional[int] = ..., type: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., recorded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., trace_id: _Optional[str] = ..., breaker_transitioned: _Optional[_Union[BreakerTransitioned, _Mapping]] = ..., breaker_mode_changed: _Optional[_Union[BreakerModeChanged, _Mapping]] = ..., config_applied: _Optional[_Union[ConfigApplied, _Mapping]] = ..., endpoints_changed: _Optional[_Union[EndpointsChanged, _Mapping]] = ..., endpoint_ejected: _Optional[_Union[EndpointEjected, _Mapping]] = ..., endpoint_returned: _Optional[_Union[EndpointReturned, _Mapping]] = ..., load_shedding: _Optional[_Union[LoadShedding, _Mapping]] = ..., log_rollback_detected: _Optional[_Union[LogRollbackDetected, _Mapping]] = ..., prev_hash: _Optional[bytes] = ..., hash: _Optional[bytes] = ...) -> None: ...
