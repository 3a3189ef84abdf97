"""An upstream's config keys (``upstreams.NAME``): where it is, which methods go to it, and how
it is protected."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Discriminator, Field, Tag, model_validator

from sidecar.balancer import BalancerSettings
from sidecar.config._breaker import BreakerConfig
from sidecar.config._concurrency import AdaptiveConcurrencyConfig, check_under_ceiling
from sidecar.config._endpoints import (
    DEFAULT_BALANCER,
    DEFAULT_EWMA_DECAY_MS,
    BalancerPolicy,
    DnsDiscovery,
    EndpointList,
    FileDiscovery,
    OutlierDetectionConfig,
    check_one_source,
    discovery_kind,
    unique_endpoints,
)
from sidecar.config._fields import (
    Address,
    PositiveFloat,
    PositiveInt,
    Route,
    StatusCodeName,
    _Model,
)
from sidecar.config._resilience import (
    HedgingConfig,
    RetryConfig,
    check_retried_or_hedged,
    resilience_policies,
)
from sidecar.resilience import ResiliencePolicies


class Fallback(_Model):
    """What answers while the breaker is OPEN: another upstream, or a fixed status."""

    upstream: str | None = None
    status: StatusCodeName | None = None
    message: str = "upstream unavailable (circuit open)"

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Fallback:
        if (self.upstream is None) == (self.status is None):
            raise ValueError("set exactly one of 'upstream' or 'status'")
        if self.status == "OK":
            raise ValueError("status must be an error code, not OK")
        return self


DEFAULT_KEEPALIVE_MS = 30_000
"""HTTP/2 keepalive ping interval on a proxy's upstream channel (``keepalive_ms``). Pings go
out only while calls are in flight and nothing was read for this long, so a default gRPC
server (which tolerates pings every 5 min without calls, and resets its count whenever it
sends data) never answers them with GOAWAY ``too_many_pings``."""
DEFAULT_KEEPALIVE_TIMEOUT_MS = 10_000
"""How long a keepalive ping may go unanswered before the connection is dropped."""
MIN_KEEPALIVE_MS = 1_000
"""Smallest ``keepalive_ms`` accepted: more frequent pings would be abuse to most servers."""


class UpstreamConfig(_Model):
    """An upstream service: where it is, which methods go to it, and how it is protected.

    Its endpoints come from exactly one of ``address`` (one ``HOST:PORT``), ``endpoints`` (a
    fixed list) or ``discovery`` (DNS or a file, refreshed at run time). Each endpoint gets its
    own connection; ``balancer`` picks one per call; ``outlier_detection`` ejects a sick one
    while the others serve, and the breaker still guards the upstream as a whole.

    ``keepalive_ms`` (None turns it off) makes the proxy's channel notice a connection that a
    partition or a lost NAT entry silently swallowed, while calls are waiting on it.
    """

    address: Address | None = None
    endpoints: Annotated[EndpointList, AfterValidator(unique_endpoints)] | None = None
    discovery: Annotated[
        Annotated[DnsDiscovery, Tag("dns")] | Annotated[FileDiscovery, Tag("file")],
        Discriminator(discovery_kind),
    ] | None = None
    balancer: BalancerPolicy = DEFAULT_BALANCER
    ewma_decay_ms: PositiveFloat = DEFAULT_EWMA_DECAY_MS
    outlier_detection: OutlierDetectionConfig = OutlierDetectionConfig()
    routes: Annotated[tuple[Route, ...], Field(min_length=1)]
    timeout_ms: PositiveFloat = 2000.0
    per_method: bool = False
    max_concurrent_requests: PositiveInt = 1000
    adaptive_concurrency: AdaptiveConcurrencyConfig | None = None
    keepalive_ms: Annotated[int, Field(ge=MIN_KEEPALIVE_MS)] | None = DEFAULT_KEEPALIVE_MS
    keepalive_timeout_ms: PositiveInt = DEFAULT_KEEPALIVE_TIMEOUT_MS
    breaker: BreakerConfig = BreakerConfig()
    fallback: Fallback | None = None
    retry: RetryConfig | None = None
    hedging: HedgingConfig | None = None

    @model_validator(mode="after")
    def _retried_or_hedged(self) -> UpstreamConfig:
        check_retried_or_hedged(self.retry, self.hedging)
        return self

    @model_validator(mode="after")
    def _adaptive_under_ceiling(self) -> UpstreamConfig:
        check_under_ceiling(self.adaptive_concurrency, self.max_concurrent_requests)
        return self

    @model_validator(mode="before")
    @classmethod
    def _one_endpoint_source(cls, data: Any) -> Any:
        return check_one_source(data)

    @property
    def source(self) -> str:
        """Where the endpoints come from: ``address``, ``endpoints``, ``dns`` or ``file``."""
        if self.discovery is not None:
            return "dns" if isinstance(self.discovery, DnsDiscovery) else "file"
        return "endpoints" if self.endpoints is not None else "address"

    @property
    def static_endpoints(self) -> tuple[str, ...]:
        """The fixed endpoints (``address`` or ``endpoints``); empty with ``discovery``."""
        if self.address is not None:
            return (self.address,)
        return self.endpoints or ()

    def resilience_policies(self) -> ResiliencePolicies:
        """Which methods are retried or hedged, and the budget they share."""
        return resilience_policies(self.retry, self.hedging)

    def balancer_settings(self) -> BalancerSettings:
        return BalancerSettings(policy=self.balancer, ewma_decay_ms=self.ewma_decay_ms)
