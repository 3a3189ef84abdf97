"""What ``sidecar demo`` runs: its ports, the sidecar's configuration, the Prometheus config.

Pure code, no I/O (``Ports.pick`` only probes which ports are free).

Upstreams of the demo sidecar:

- ``payments`` and ``inventory``: one endpoint each, on the shop sample upstream;
- ``orders``: three replicas (``endpoints: [...]``), balanced per call by ``p2c_ewma``, with
  outlier detection tuned so the sick replica is ejected within a second and comes back
  within seconds (``base_ejection_ms`` 4 s, doubling with ejections in a row), all inside
  ``make demo``'s 60 s; its calls are retried (``retry``, under a budget) on another replica,
  so the sick one's failures never reach the host app, even before its ejection;
- ``catalog``: one endpoint on the shop sample upstream, with a fixed capacity, behind an
  adaptive concurrency limit (``adaptive_concurrency``, Gradient2) that sheds the surge the
  demo offers it rather than queueing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sidecar.demo._processes import pick_port
from sidecar.demo.upstream import (
    CATALOG_SERVICE,
    INVENTORY_SERVICE,
    ORDERS_SERVICE,
    PAYMENTS_SERVICE,
)

__all__ = [
    "CATALOG_LIMIT", "DEMO_BREAKER", "INSTANCE", "ORDERS_BREAKER", "ORDERS_OUTLIER",
    "ORDERS_REPLICAS", "ORDERS_RETRY",
    "SERVICE", "SICK_REPLICA", "Ports", "prometheus_config", "replica_name", "sidecar_config",
]

SERVICE: Final = "demo-shop"
INSTANCE: Final = "demo-shop-1"
"""The demo sidecar's identity (also the labels deploy/prometheus.yml gives its target)."""

PREFERRED_PORTS: Final[dict[str, int]] = {
    "upstream": 50051, "listen": 15001, "admin": 15000, "metrics": 9464,
    "eventlog": 7070, "eventlog_metrics": 9465,
}
ORDERS_REPLICAS: Final = 3
PREFERRED_ORDERS_PORTS: Final = tuple(50061 + i for i in range(ORDERS_REPLICAS))
SICK_REPLICA: Final = 1
"""Index (0-based) of the orders replica that sickens: ``orders-2``."""
SIDECAR_SHUTDOWN_GRACE_S: Final = 3.0

DEMO_BREAKER: Final[dict[str, Any]] = {
    "window": {"type": "count", "size": 20},
    "minimum_calls": 10,
    "failure_rate": 0.5,
    "slow_call_ms": 250,
    "slow_call_rate": 0.6,
    "consecutive_failures": 5,
    "half_open_probes": 3,
    "open": {"base_ms": 1000, "multiplier": 2.0, "max_ms": 8000, "jitter": 0.1},
}
"""Tuned for a lively demo: trips within a second of a bad phase, back within seconds."""

ORDERS_BREAKER: Final[dict[str, Any]] = {**DEMO_BREAKER, "consecutive_failures": 10}
"""The demo breaker, but more failures in a row than one replica gives before its ejection:
the breaker is for the service as a whole failing, ejection for one sick replica."""

ORDERS_OUTLIER: Final[dict[str, Any]] = {
    "consecutive_failures": 5,
    "failure_rate": 0.5,
    "minimum_calls": 10,
    "base_ejection_ms": 4000,
    "max_ejection_ms": 30000,
    "interval_ms": 10000,
    "max_ejection_percent": 50,
}
"""Out 4 s, then 8 s, ...; one ejection in a row forgiven per 10 s back in service."""

ORDERS_EWMA_DECAY_MS: Final = 1000
"""A replica back from an ejection starts at the balancer's default 30 ms estimate and gets
calls again once that decays below its healthy peers' (about a second at this decay; the
default 10 s would keep a returned replica idle for most of the demo's sick spell)."""


ORDERS_RETRY: Final[dict[str, Any]] = {
    "max_attempts": 3,
    "retryable_codes": ["UNAVAILABLE"],
    "methods": [f"/{ORDERS_SERVICE}/"],
    "backoff": {"base_ms": 5, "max_ms": 50, "multiplier": 2.0, "jitter": 0.2},
    "budget": {"ratio": 0.2, "min_per_s": 10},
}
"""A failed orders call is tried again (up to 3 attempts, a few ms apart), preferring a replica
not yet tried; retries stay under 20% of recent calls plus 10/s, so a whole-service outage
cannot turn into a retry storm."""

CATALOG_LIMIT: Final[dict[str, Any]] = {
    "algorithm": "gradient2",
    "initial_limit": 20,
    "min_limit": 4,
}
"""The limit starts at 20 calls in flight and follows catalog's latency (Gradient2): when calls
queue in the server their latency rises and the limit falls towards what it can serve; calls
over the limit are refused at once (RESOURCE_EXHAUSTED, ``x-sidecar-overflow: true``)."""


def replica_name(index: int) -> str:
    """``orders-1``, ``orders-2``, ... (the demo's names for the orders replicas)."""
    return f"orders-{index + 1}"


@dataclass(frozen=True, slots=True)
class Ports:
    upstream: int
    listen: int
    admin: int
    metrics: int
    eventlog: int
    eventlog_metrics: int
    orders: tuple[int, ...] = PREFERRED_ORDERS_PORTS
    """One port per orders replica."""

    @classmethod
    def pick(cls) -> Ports:
        return cls(**{name: pick_port(port) for name, port in PREFERRED_PORTS.items()},
                   orders=tuple(pick_port(port) for port in PREFERRED_ORDERS_PORTS))

    def orders_endpoints(self) -> tuple[str, ...]:
        return tuple(f"127.0.0.1:{port}" for port in self.orders)


def sidecar_config(ports: Ports, data_dir: Path) -> dict[str, Any]:
    """The demo sidecar's configuration (see the reference in docs/configuration.md)."""
    upstream = f"127.0.0.1:{ports.upstream}"
    return {
        "service": SERVICE,
        "instance": INSTANCE,
        "listen": f"127.0.0.1:{ports.listen}",
        "admin_listen": f"127.0.0.1:{ports.admin}",
        "metrics_listen": f"127.0.0.1:{ports.metrics}",
        "shutdown_grace_s": SIDECAR_SHUTDOWN_GRACE_S,
        "upstreams": {
            "payments": {"address": upstream, "routes": [f"/{PAYMENTS_SERVICE}/"],
                         "timeout_ms": 1000, "breaker": DEMO_BREAKER},
            "inventory": {"address": upstream, "routes": [f"/{INVENTORY_SERVICE}/"],
                          "timeout_ms": 1000},
            "orders": {"endpoints": list(ports.orders_endpoints()),
                       "routes": [f"/{ORDERS_SERVICE}/"], "timeout_ms": 1000,
                       "balancer": "p2c_ewma", "ewma_decay_ms": ORDERS_EWMA_DECAY_MS,
                       "outlier_detection": ORDERS_OUTLIER, "breaker": ORDERS_BREAKER,
                       "retry": ORDERS_RETRY},
            "catalog": {"address": upstream, "routes": [f"/{CATALOG_SERVICE}/"],
                        "timeout_ms": 1000, "breaker": DEMO_BREAKER,
                        "adaptive_concurrency": CATALOG_LIMIT},
        },
        "eventlog": {"address": f"127.0.0.1:{ports.eventlog}",
                     "outbox_path": str(data_dir / "sidecar-outbox.db")},
        "logging": {"level": "INFO"},
    }


def prometheus_config(ports: Ports) -> dict[str, Any]:
    """A Prometheus config scraping this demo (same jobs and labels as deploy/prometheus.yml)."""
    return {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "scrape_configs": [
            {"job_name": "evergreen-sidecar",
             "static_configs": [{"targets": [f"127.0.0.1:{ports.metrics}"],
                                 "labels": {"service": SERVICE, "instance": INSTANCE}}]},
            {"job_name": "evergreen-eventlog", "honor_labels": True,
             "static_configs": [{"targets": [f"127.0.0.1:{ports.eventlog_metrics}"]}]},
        ],
    }
