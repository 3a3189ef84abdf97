"""Balancer and outlier-detection settings: every default in one place, validated once.

``sidecar.config`` reads its defaults from here, so changing a default means changing one line.
Both classes are immutable; a reload builds new ones and hands them to
:meth:`Balancer.reconfigure`, which keeps every endpoint's state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Policy = Literal["p2c_ewma", "round_robin", "least_request"]
POLICIES: tuple[Policy, ...] = ("p2c_ewma", "round_robin", "least_request")


def _is_int_at_least(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _finite(value: object) -> float | None:
    """``value`` as a float when it is a finite int or float (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _positive_number(problems: list[str], name: str, value: object) -> None:
    number = _finite(value)
    if number is None or number <= 0:
        problems.append(f"{name}: must be a finite number > 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class BalancerSettings:
    """How one upstream's calls are spread over its endpoints.

    A bad value raises ``ValueError`` naming the field and the rule, e.g.
    ``ewma_decay_ms: must be a finite number > 0, got 0``.

    Example::

        settings = BalancerSettings(policy="least_request")
    """

    policy: Policy = "p2c_ewma"
    """``p2c_ewma`` (Linkerd's PeakEWMA + power of two choices), ``round_robin`` or
    ``least_request`` (P2C on calls in flight only, as Envoy's least_request with
    choice_count 2)."""
    ewma_decay_ms: float = 10_000.0
    """Time constant of the latency EWMA: an observation's weight falls to 1/e after this long,
    and an idle endpoint's estimate decays toward 0 at this pace (so it gets re-tried)."""
    default_rtt_ms: float = 30.0
    """The latency estimate of an endpoint with no calls yet, and of one just back from an
    ejection (as Linkerd's default RTT)."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.policy not in POLICIES:
            allowed = ", ".join(POLICIES)
            problems.append(f"policy: must be one of {allowed}, got {self.policy!r}")
        _positive_number(problems, "ewma_decay_ms", self.ewma_decay_ms)
        _positive_number(problems, "default_rtt_ms", self.default_rtt_ms)
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True, slots=True)
class OutlierSettings:
    """When one endpoint of an upstream is ejected, and for how long (Envoy's outlier model).

    Rules (each ``None`` turns it off):

    - ``consecutive_failures``: this many failures in a row eject the endpoint.
    - ``failure_rate``: within the endpoint's current ``interval_ms`` period (counts reset at
      each period, in time), once it has ``minimum_calls`` calls and
      ``failures / calls >= failure_rate``, it is ejected.

    The ejection lasts ``base_ejection_ms * ejections_in_a_row``, capped at
    ``max_ejection_ms``; ``ejections_in_a_row`` falls by one per ``interval_ms`` the endpoint
    spends back in service without being ejected. At most ``max_ejection_percent`` of the set
    is ejected at once, and never the last active endpoint.

    Example::

        outlier = OutlierSettings(consecutive_failures=None, failure_rate=0.5)
    """

    enabled: bool = True
    """False: never eject (the endpoints are still balanced)."""
    consecutive_failures: int | None = 5
    """Failures in a row that eject. None: rule off."""
    failure_rate: float | None = None
    """Failures / calls within the current interval that eject (0 < x <= 1). None: rule off."""
    minimum_calls: int = 20
    """Calls within the current interval before ``failure_rate`` is judged."""
    base_ejection_ms: float = 30_000.0
    """Ejection time of the first ejection in a row."""
    max_ejection_ms: float = 300_000.0
    """Cap of the ejection time (>= base_ejection_ms)."""
    interval_ms: float = 10_000.0
    """Length of the failure-rate period, and the time back in service that takes one off
    ``ejections_in_a_row``."""
    max_ejection_percent: float = 50.0
    """At most floor(endpoints * this / 100) endpoints are ejected at once (0 <= x <= 100)."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not isinstance(self.enabled, bool):
            problems.append(f"enabled: must be true or false, got {self.enabled!r}")
        if self.consecutive_failures is not None and not _is_int_at_least(
            self.consecutive_failures, 1
        ):
            problems.append(
                "consecutive_failures: must be an integer >= 1 or None, "
                f"got {self.consecutive_failures!r}"
            )
        if self.failure_rate is not None:
            rate = _finite(self.failure_rate)
            if rate is None or not 0 < rate <= 1:
                problems.append(
                    f"failure_rate: must be > 0 and <= 1 or None, got {self.failure_rate!r}"
                )
        if not _is_int_at_least(self.minimum_calls, 1):
            problems.append(f"minimum_calls: must be an integer >= 1, got {self.minimum_calls!r}")
        _positive_number(problems, "base_ejection_ms", self.base_ejection_ms)
        _positive_number(problems, "max_ejection_ms", self.max_ejection_ms)
        base, cap = _finite(self.base_ejection_ms), _finite(self.max_ejection_ms)
        if base is not None and cap is not None and 0 < base and 0 < cap < base:
            problems.append(
                f"max_ejection_ms: must be >= base_ejection_ms ({self.base_ejection_ms:g}), "
                f"got {self.max_ejection_ms:g}"
            )
        _positive_number(problems, "interval_ms", self.interval_ms)
        pct = _finite(self.max_ejection_percent)
        if pct is None or not 0 <= pct <= 100:
            problems.append(
                f"max_ejection_percent: must be >= 0 and <= 100, got {self.max_ejection_percent!r}"
            )
        if problems:
            raise ValueError("; ".join(problems))
