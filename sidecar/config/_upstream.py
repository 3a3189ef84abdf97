"""An upstream's config keys (``upstreams.NAME``): where it is, which methods go to it, and how
it is protected."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from sidecar.config._breaker import BreakerConfig
from sidecar.config._fields import (
    Address,
    PositiveFloat,
    PositiveInt,
    Route,
    StatusCodeName,
    _Model,
)


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

    ``keepalive_ms`` (None turns it off) makes the proxy's channel notice a connection that a
    partition or a lost NAT entry silently swallowed, while calls are waiting on it.
    """

    address: Address
    routes: Annotated[tuple[Route, ...], Field(min_length=1)]
    timeout_ms: PositiveFloat = 2000.0
    per_method: bool = False
    max_concurrent_requests: PositiveInt = 1000
    keepalive_ms: Annotated[int, Field(ge=MIN_KEEPALIVE_MS)] | None = DEFAULT_KEEPALIVE_MS
    keepalive_timeout_ms: PositiveInt = DEFAULT_KEEPALIVE_TIMEOUT_MS
    breaker: BreakerConfig = BreakerConfig()
    fallback: Fallback | None = None
