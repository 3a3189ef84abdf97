"""Typed, validated sidecar configuration: YAML in, clear errors out.

A bad file is refused as a whole with one line per problem, each naming the key path::

    upstreams.payments.breaker.failure_rate: must be > 0 and <= 1

Unknown keys are errors (a typo must never pass silently). String values may use
``${VAR}`` or ``${VAR:-default}`` to read the environment, e.g. ``instance: ${HOSTNAME}``.

Defaults live in one place each: breaker defaults in :class:`sidecar.breaker.BreakerSettings`,
everything else in the field defaults below.

Example::

    from sidecar.config import load_config
    config = load_config("sidecar.yaml")   # raises ConfigError with every problem listed
    settings = config.upstreams["payments"].breaker.to_settings()
"""

from sidecar.config._breaker import BreakerConfig, CountWindow, OpenDuration, TimeWindow
from sidecar.config._concurrency import AdaptiveConcurrencyConfig
from sidecar.config._endpoints import (
    DnsDiscovery,
    FileDiscovery,
    OutlierDetectionConfig,
)
from sidecar.config._fields import (
    DEFAULT_FAILURE_CODES,
    GRPC_CODES,
    Address,
    ConfigError,
    PositiveFloat,
    PositiveInt,
    Rate,
    Ratio,
    Route,
    StatusCodeName,
)
from sidecar.config._loading import MAX_CONFIG_VALUES, config_digest, load_config, parse_config
from sidecar.config._sidecar import (
    ClientTlsConfig,
    EventlogConfig,
    LoggingConfig,
    MetricsConfig,
    ServerTlsConfig,
    ShipperBackoff,
    SidecarConfig,
    TracingConfig,
)
from sidecar.config._upstream import (
    DEFAULT_KEEPALIVE_MS,
    DEFAULT_KEEPALIVE_TIMEOUT_MS,
    MIN_KEEPALIVE_MS,
    Fallback,
    UpstreamConfig,
)

__all__ = [
    "DEFAULT_FAILURE_CODES",
    "DEFAULT_KEEPALIVE_MS",
    "DEFAULT_KEEPALIVE_TIMEOUT_MS",
    "GRPC_CODES",
    "MAX_CONFIG_VALUES",
    "MIN_KEEPALIVE_MS",
    "AdaptiveConcurrencyConfig",
    "Address",
    "BreakerConfig",
    "ClientTlsConfig",
    "ConfigError",
    "CountWindow",
    "DnsDiscovery",
    "EventlogConfig",
    "Fallback",
    "FileDiscovery",
    "LoggingConfig",
    "MetricsConfig",
    "OpenDuration",
    "OutlierDetectionConfig",
    "PositiveFloat",
    "PositiveInt",
    "Rate",
    "Ratio",
    "Route",
    "ServerTlsConfig",
    "ShipperBackoff",
    "SidecarConfig",
    "StatusCodeName",
    "TimeWindow",
    "TracingConfig",
    "UpstreamConfig",
    "config_digest",
    "load_config",
    "parse_config",
]
