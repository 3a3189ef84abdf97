"""Log lines of the adaptive concurrency limit: one WARNING when an upstream starts shedding
calls, one INFO when it stops (the limiter's hysteresis makes it a pair per overload, never a
line per shed call)::

    upstream payments: shedding calls over the adaptive limit 8 (gradient2, 8 in flight)
    upstream payments: stopped shedding after 3.2 s, 412 calls shed (limit 11)

Structured fields: ``event`` (``load_shedding_started`` / ``load_shedding_stopped``),
``upstream``, ``limit``, ``in_flight``, ``shed``, ``algorithm``, ``duration_ms``.
"""

from __future__ import annotations

import logging
from typing import Final

from sidecar.resilience import SheddingChange, SheddingListener

__all__ = ["EVENT_SHEDDING_STARTED", "EVENT_SHEDDING_STOPPED", "LoggingSheddingListener"]

EVENT_SHEDDING_STARTED: Final = "load_shedding_started"
EVENT_SHEDDING_STOPPED: Final = "load_shedding_stopped"


class LoggingSheddingListener(SheddingListener):
    """Logs each shedding period's start and stop; only enqueues a log record, never blocks."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger("sidecar.proxy")

    def on_shedding(self, change: SheddingChange) -> None:
        fields = {
            "upstream": change.upstream, "limit": change.limit, "in_flight": change.in_flight,
            "shed": change.shed, "algorithm": change.algorithm,
            "duration_ms": round(change.duration_s * 1000),
        }
        if change.phase == "started":
            self._logger.warning(
                "upstream %s: shedding calls over the adaptive limit %d (%s, %d in flight)",
                change.upstream, change.limit, change.algorithm, change.in_flight,
                extra={"event": EVENT_SHEDDING_STARTED, **fields})
        else:
            self._logger.info(
                "upstream %s: stopped shedding after %.1f s, %d calls shed (limit %d)",
                change.upstream, change.duration_s, change.shed, change.limit,
                extra={"event": EVENT_SHEDDING_STOPPED, **fields})
