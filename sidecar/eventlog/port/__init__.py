"""The event store port: what every store adapter implements and every user of a store sees.

- ``records``: ``NewEvent``, ``StoredEvent``, ``AppendOutcome``, ``EventFilter``, ``FollowBatch``;
- ``errors``: the ``StoreError`` tree and the rules it is raised by (``check_chain``, ...);
- ``limits``: read limits and the bounds of one event (``validate_new_event``);
- ``store``: the abstract ``EventStore``; ``following``: the catch-up every follow starts with;
- ``anchors``: what retention leaves of a cut stream;
- ``opening``: ``open_store(url)``, a table of URL schemes naming the adapters.
"""

from sidecar.eventlog.port.anchors import (
    BeforeAnchorError,
    RetentionAnchor,
    check_after_anchor,
    deleted_events,
)
from sidecar.eventlog.port.errors import (
    ChainError,
    ConflictError,
    InvalidEventError,
    StoreError,
    check_chain,
    check_same_content,
    version_taken,
)
from sidecar.eventlog.port.following import next_cursor, read_until_head
from sidecar.eventlog.port.limits import (
    DEFAULT_READ_LIMIT,
    MAX_PAYLOAD_BYTES,
    MAX_READ_LIMIT,
    MAX_STREAM_CHARS,
    MAX_TYPE_CHARS,
    OCCURRED_AT_MAX_NS,
    OCCURRED_AT_MIN_NS,
    check_read_limit,
    occurred_at_out_of_range,
    validate_new_event,
)
from sidecar.eventlog.port.opening import allows_retention, open_store, store_kind
from sidecar.eventlog.port.records import (
    NO_FILTER,
    AppendOutcome,
    EventFilter,
    FollowBatch,
    NewEvent,
    StoredEvent,
)
from sidecar.eventlog.port.store import DEFAULT_FOLLOW_WAIT_S, EventStore

__all__ = [
    "DEFAULT_FOLLOW_WAIT_S",
    "DEFAULT_READ_LIMIT",
    "MAX_PAYLOAD_BYTES",
    "MAX_READ_LIMIT",
    "MAX_STREAM_CHARS",
    "MAX_TYPE_CHARS",
    "NO_FILTER",
    "OCCURRED_AT_MAX_NS",
    "OCCURRED_AT_MIN_NS",
    "AppendOutcome",
    "BeforeAnchorError",
    "ChainError",
    "ConflictError",
    "EventFilter",
    "EventStore",
    "FollowBatch",
    "InvalidEventError",
    "NewEvent",
    "RetentionAnchor",
    "StoreError",
    "StoredEvent",
    "allows_retention",
    "check_after_anchor",
    "check_chain",
    "check_read_limit",
    "check_same_content",
    "deleted_events",
    "next_cursor",
    "occurred_at_out_of_range",
    "open_store",
    "read_until_head",
    "store_kind",
    "validate_new_event",
    "version_taken",
]
