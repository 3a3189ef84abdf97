"""The event log's gRPC API (``sidecar.v1.EventLog``): what a call goes through, call by call.

- ``service``: ``EventLogService``, the calls over an ``EventStore``;
- ``auth`` (bearer token interceptor) and ``admission`` (the bound on Append work held);
- ``validation`` and ``payload_checks``: INVALID_ARGUMENT naming the field;
- ``subscription``: one Subscribe stream, and when a subscriber is too slow;
- ``status_protos``: answers built from the projections' views.

The assembly (ports, TLS, health, metrics, lifecycle) is ``sidecar.eventlog.server``. Names load
on first use (``sidecar.eventlog._lazy``): the client needs ``auth`` without the server's
modules.
"""

from sidecar.eventlog import _lazy

_EXPORTS = {
    "AppendAdmission": "admission",
    "BearerTokenInterceptor": "auth",
    "bearer_metadata": "auth",
    "EventLogService": "service",
    "Subscription": "subscription",
    "SubscriberTooSlow": "subscription",
    "append_records": "validation",
    "validate_filter": "validation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    return _lazy.load(__name__, _EXPORTS, name)
