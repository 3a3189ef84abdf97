"""Names shared by the telemetry modules (labels, attribute keys, span names)."""

from __future__ import annotations

from typing import Final

UNROUTED: Final = "_unrouted_"
"""Label/attribute value for calls whose method matched no route (bounded cardinality)."""

OTHER_METHOD: Final = "_other_"
"""Method label once an upstream has reached its cap of distinct method labels."""


def upstream_of(breaker: str) -> str:
    """The upstream a breaker protects: breaker names are ``upstream`` or, with
    ``per_method``, ``upstream/<method>``."""
    return breaker.split("/", 1)[0]

OTHER_ENDPOINT: Final = "_other_"
"""Endpoint label once an upstream has reached its cap of distinct endpoint labels."""
