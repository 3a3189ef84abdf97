"""Where an upstream's endpoints come from, how calls are spread over them, and when one is
ejected (``upstreams.NAME.endpoints`` / ``discovery`` / ``balancer`` / ``outlier_detection``).

Defaults of the balancer and of outlier detection live in :mod:`sidecar.balancer`
(:class:`~sidecar.balancer.BalancerSettings`, :class:`~sidecar.balancer.OutlierSettings`);
defaults of discovery below.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from sidecar.balancer import BalancerSettings, OutlierSettings
from sidecar.config._fields import Address, PositiveFloat, PositiveInt, Rate, _Model

_OUTLIER = OutlierSettings()  # the single source of outlier-detection defaults
_BALANCER = BalancerSettings()

DEFAULT_DNS_REFRESH_MS = 5_000.0
"""How often DNS discovery re-resolves (``discovery.refresh_ms``)."""
DEFAULT_DNS_TIMEOUT_MS = 2_000.0
"""How long one DNS lookup may take before it counts as a failed refresh."""
DEFAULT_FILE_POLL_MS = 1_000.0
"""How often file discovery checks whether its file changed (``discovery.poll_ms``)."""
MIN_REFRESH_MS = 100.0
"""Smallest refresh or poll interval accepted (a resolver or disk is not a busy loop)."""

BalancerPolicy = Literal["p2c_ewma", "round_robin", "least_request"]


class DnsDiscovery(_Model):
    """Every A/AAAA record of ``dns``'s host is an endpoint on ``dns``'s port (a Kubernetes
    headless service), re-resolved every ``refresh_ms``. ``resolver``: ask this DNS server
    (``HOST:PORT``, UDP) instead of the system's resolver; ``timeout_ms`` bounds one lookup."""

    dns: Address
    refresh_ms: Annotated[float, Field(ge=MIN_REFRESH_MS)] = DEFAULT_DNS_REFRESH_MS
    resolver: Address | None = None
    timeout_ms: PositiveFloat = DEFAULT_DNS_TIMEOUT_MS


class FileDiscovery(_Model):
    """One ``HOST:PORT`` a line of ``file`` (``#`` starts a comment), re-read when the file
    changes (checked every ``poll_ms``)."""

    file: Annotated[str, Field(min_length=1)]
    poll_ms: Annotated[float, Field(ge=MIN_REFRESH_MS)] = DEFAULT_FILE_POLL_MS


class OutlierDetectionConfig(_Model):
    """Ejection of single endpoints (Envoy's outlier detection); see
    :class:`sidecar.balancer.OutlierSettings` for the rules."""

    enabled: bool = _OUTLIER.enabled
    consecutive_failures: PositiveInt | None = _OUTLIER.consecutive_failures
    failure_rate: Rate | None = _OUTLIER.failure_rate
    minimum_calls: PositiveInt = _OUTLIER.minimum_calls
    base_ejection_ms: PositiveFloat = _OUTLIER.base_ejection_ms
    max_ejection_ms: PositiveFloat = _OUTLIER.max_ejection_ms
    interval_ms: PositiveFloat = _OUTLIER.interval_ms
    max_ejection_percent: Annotated[float, Field(ge=0.0, le=100.0)] = (
        _OUTLIER.max_ejection_percent
    )

    @model_validator(mode="after")
    def _max_not_below_base(self) -> OutlierDetectionConfig:
        if self.max_ejection_ms < self.base_ejection_ms:
            raise ValueError(f"max_ejection_ms ({self.max_ejection_ms:g}) must be >= "
                             f"base_ejection_ms ({self.base_ejection_ms:g})")
        return self

    def to_settings(self) -> OutlierSettings:
        return OutlierSettings(
            enabled=self.enabled,
            consecutive_failures=self.consecutive_failures,
            failure_rate=self.failure_rate,
            minimum_calls=self.minimum_calls,
            base_ejection_ms=self.base_ejection_ms,
            max_ejection_ms=self.max_ejection_ms,
            interval_ms=self.interval_ms,
            max_ejection_percent=self.max_ejection_percent,
        )


def discovery_kind(data: Any) -> str | None:
    """Which discovery a raw ``discovery`` mapping asks for (``dns`` or ``file``)."""
    if isinstance(data, dict):
        kinds = [kind for kind in ("dns", "file") if kind in data]
        if len(kinds) == 1:
            return kinds[0]
    return None


def check_one_source(data: Any) -> Any:
    """Before validation: exactly one of ``address`` / ``endpoints`` / ``discovery``, and a
    ``discovery`` with exactly one of ``dns`` / ``file``."""
    if not isinstance(data, dict):
        return data
    # A key set to null counts as absent (a dumped config carries all three).
    given = [key for key in ("address", "endpoints", "discovery") if data.get(key) is not None]
    if len(given) != 1:
        raise ValueError(
            "set exactly one of 'address' (one HOST:PORT), 'endpoints' (a list of HOST:PORT) "
            "or 'discovery' ({dns: HOST:PORT} or {file: PATH})"
            + (f"; got {', '.join(given)}" if given else "")
        )
    discovery = data.get("discovery")
    if discovery is not None and not isinstance(discovery, dict):
        raise ValueError("discovery: must be a mapping: {dns: HOST:PORT} or {file: PATH}")
    if isinstance(discovery, dict):
        kinds = [kind for kind in ("dns", "file") if kind in discovery]
        if len(kinds) != 1:
            raise ValueError("discovery: set exactly one of 'dns' (HOST:PORT) or 'file' (PATH)")
    return data


def unique_endpoints(endpoints: tuple[str, ...]) -> tuple[str, ...]:
    seen: set[str] = set()
    for endpoint in endpoints:
        if endpoint in seen:
            raise ValueError(f"{endpoint!r} is listed twice")
        seen.add(endpoint)
    return endpoints


DEFAULT_BALANCER: BalancerPolicy = _BALANCER.policy
DEFAULT_EWMA_DECAY_MS: float = _BALANCER.ewma_decay_ms
EndpointList = Annotated[tuple[Address, ...], Field(min_length=1)]
