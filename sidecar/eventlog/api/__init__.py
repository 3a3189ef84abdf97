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
    "admission": ("AppendAdmission",),
    "auth": ("BearerTokenInterceptor", "bearer_metadata"),
    "service": ("EventLogService",),
    "subscription": ("SubscriberTooSlow", "Subscription"),
    "validation": ("append_records", "validate_filter"),
}

__all__ = _lazy.public_names(_EXPORTS)
__getattr__ = _lazy.loader(__name__, _EXPORTS)
