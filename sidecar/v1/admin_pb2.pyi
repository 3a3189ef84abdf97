import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from sidecar.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EndpointState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENDPOINT_STATE_UNSPECIFIED: _ClassVar[EndpointState]
    ENDPOINT_STATE_ACTIVE: _ClassVar[EndpointState]
    ENDPOINT_STATE_EJECTED: _ClassVar[EndpointState]
ENDPOINT_STATE_UNSPECIFIED: EndpointState
ENDPOINT_STATE_ACTIVE: EndpointState
ENDPOINT_STATE_EJECTED: EndpointState

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
    __slots__ = ("name", "upstream", "state", "mode", "window", "open_until", "trip_streak", "last_transition", "half_open_in_flight", "open_duration_ms", "concurrency", "streak_decay_in_ms", "retry_budget")
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
    STREAK_DECAY_IN_MS_FIELD_NUMBER: _ClassVar[int]
    RETRY_BUDGET_FIELD_NUMBER: _ClassVar[int]
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
    streak_decay_in_ms: int
    retry_budget: RetryBudgetInfo
    def __init__(self, name: _Optional[str] = ..., upstream: _Optional[str] = ..., state: _Optional[_Union[_events_pb2.BreakerState, str]] = ..., mode: _Optional[_Union[_events_pb2.BreakerMode, str]] = ..., window: _Optional[_Union[_events_pb2.WindowSnapshot, _Mapping]] = ..., open_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., trip_streak: _Optional[int] = ..., last_transition: _Optional[_Union[LastTransition, _Mapping]] = ..., half_open_in_flight: _Optional[int] = ..., open_duration_ms: _Optional[int] = ..., concurrency: _Optional[_Union[ConcurrencyLimit, _Mapping]] = ..., streak_decay_in_ms: _Optional[int] = ..., retry_budget: _Optional[_Union[RetryBudgetInfo, _Mapping]] = ...) -> None: ...

class ConcurrencyLimit(_message.Message):
    __slots__ = ("in_flight", "max_concurrent_requests", "overflows", "algorithm", "limit", "shed", "shedding")
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    OVERFLOWS_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    SHED_FIELD_NUMBER: _ClassVar[int]
    SHEDDING_FIELD_NUMBER: _ClassVar[int]
    in_flight: int
    max_concurrent_requests: int
    overflows: int
    algorithm: str
    limit: int
    shed: int
    shedding: bool
    def __init__(self, in_flight: _Optional[int] = ..., max_concurrent_requests: _Optional[int] = ..., overflows: _Optional[int] = ..., algorithm: _Optional[str] = ..., limit: _Optional[int] = ..., shed: _Optional[int] = ..., shedding: _Optional[bool] = ...) -> None: ...

class RetryBudgetInfo(_message.Message):
    __slots__ = ("ratio", "min_per_s", "available", "retries", "hedges", "exhausted")
    RATIO_FIELD_NUMBER: _ClassVar[int]
    MIN_PER_S_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    HEDGES_FIELD_NUMBER: _ClassVar[int]
    EXHAUSTED_FIELD_NUMBER: _ClassVar[int]
    ratio: float
    min_per_s: float
    available: float
    retries: int
    hedges: int
    exhausted: int
    def __init__(self, ratio: _Optional[float] = ..., min_per_s: _Optional[float] = ..., available: _Optional[float] = ..., retries: _Optional[int] = ..., hedges: _Optional[int] = ..., exhausted: _Optional[int] = ...) -> None: ...

class ListEndpointsRequest(_message.Message):
    __slots__ = ("upstream",)
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    upstream: str
    def __init__(self, upstream: _Optional[str] = ...) -> None: ...

class ListEndpointsResponse(_message.Message):
    __slots__ = ("upstreams",)
    UPSTREAMS_FIELD_NUMBER: _ClassVar[int]
    upstreams: _containers.RepeatedCompositeFieldContainer[UpstreamEndpoints]
    def __init__(self, upstreams: _Optional[_Iterable[_Union[UpstreamEndpoints, _Mapping]]] = ...) -> None: ...

class UpstreamEndpoints(_message.Message):
    __slots__ = ("upstream", "balancer", "source", "endpoints", "refresh_failures")
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    BALANCER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    REFRESH_FAILURES_FIELD_NUMBER: _ClassVar[int]
    upstream: str
    balancer: str
    source: str
    endpoints: _containers.RepeatedCompositeFieldContainer[EndpointInfo]
    refresh_failures: int
    def __init__(self, upstream: _Optional[str] = ..., balancer: _Optional[str] = ..., source: _Optional[str] = ..., endpoints: _Optional[_Iterable[_Union[EndpointInfo, _Mapping]]] = ..., refresh_failures: _Optional[int] = ...) -> None: ...

class EndpointInfo(_message.Message):
    __slots__ = ("address", "state", "ewma_ms", "in_flight", "ejected_until", "ejections_in_a_row", "calls", "failures")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EWMA_MS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    EJECTED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    EJECTIONS_IN_A_ROW_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    address: str
    state: EndpointState
    ewma_ms: float
    in_flight: int
    ejected_until: _timestamp_pb2.Timestamp
    ejections_in_a_row: int
    calls: int
    failures: int
    def __init__(self, address: _Optional[str] = ..., state: _Optional[_Union[EndpointState, str]] = ..., ewma_ms: _Optional[float] = ..., in_flight: _Optional[int] = ..., ejected_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ejections_in_a_row: _Optional[int] = ..., calls: _Optional[int] = ..., failures: _Optional[int] = ...) -> None: ...
