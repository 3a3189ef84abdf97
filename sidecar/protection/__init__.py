"""The shared core every way of calling goes through: the proxy and the in-process interceptors.

- :mod:`~sidecar.protection.guard`: an upstream's protection (breakers, failure codes, limits)
  and the answers the sidecar makes itself; :mod:`~sidecar.protection.admission` admits a call
  and settles it; :mod:`~sidecar.protection.registry` owns the breakers by name.
- :mod:`~sidecar.protection.routes`: the route table (method path to target).
- :mod:`~sidecar.protection.hooks` and :mod:`~sidecar.protection.composite`: the plugin port
  that telemetry and events plug into, so they never import a transport (docs/design.md).
"""

from sidecar.protection.admission import Admission, Guarded, admit
from sidecar.protection.composite import CompositeObserver, combine_observers
from sidecar.protection.guard import (
    MAX_METHOD_BREAKERS,
    MD_BREAKER,
    MD_FALLBACK,
    MD_OVERFLOW,
    MD_RETRY_AFTER_MS,
    MD_UPSTREAM,
    OTHER_METHODS_BREAKER_SUFFIX,
    Bulkhead,
    GuardSettings,
    Rejection,
    UpstreamGuard,
    status_codes,
)
from sidecar.protection.hooks import (
    NOOP_OBSERVER,
    NOOP_SCOPE,
    CallInfo,
    CallKind,
    CallObserver,
    CallScope,
    ConfigSource,
    MetadataItem,
    ProxyPlugin,
    WatchedUpstream,
)
from sidecar.protection.registry import BreakerRegistry
from sidecar.protection.routes import RouteTable

__all__ = [
    "MAX_METHOD_BREAKERS",
    "MD_BREAKER",
    "MD_FALLBACK",
    "MD_OVERFLOW",
    "MD_RETRY_AFTER_MS",
    "MD_UPSTREAM",
    "NOOP_OBSERVER",
    "NOOP_SCOPE",
    "OTHER_METHODS_BREAKER_SUFFIX",
    "Admission",
    "BreakerRegistry",
    "Bulkhead",
    "CallInfo",
    "CallKind",
    "CallObserver",
    "CallScope",
    "CompositeObserver",
    "ConfigSource",
    "GuardSettings",
    "Guarded",
    "MetadataItem",
    "ProxyPlugin",
    "Rejection",
    "RouteTable",
    "UpstreamGuard",
    "WatchedUpstream",
    "admit",
    "combine_observers",
    "status_codes",
]
