"""Loud but bounded logging of a repeating problem (events dropped, shipping refused, retries
the budget refused); shared by the event pipeline and telemetry.

Losing an event must never be silent, yet a log line per dropped event during an outage would
flood the logs (and the log pipeline is itself bounded). :class:`LoudLimiter` logs the first
occurrence at once and then at most one summary line per ``interval_s`` carrying how many
occurrences it stands for.

Thread-safe (one lock around two numbers); never blocks beyond that lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Final

DEFAULT_LOUD_INTERVAL_S: Final = 10.0
"""At most one line per problem kind this often (the first occurrence is always logged)."""


class LoudLimiter:
    """Logs ``message`` at ``level`` for the first occurrence, then once per ``interval_s``.

    Example::

        limiter = LoudLimiter(logging.getLogger("sidecar.events"), "events dropped: queue full")
        limiter.hit(extra={"reason": "queue_full"})
    """

    def __init__(self, logger: logging.Logger, message: str, *, level: int = logging.ERROR,
                 interval_s: float = DEFAULT_LOUD_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._message = message
        self._level = level
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._unreported = 0
        self._total = 0
        self._next_at = float("-inf")

    @property
    def total(self) -> int:
        """Occurrences so far."""
        return self._total

    def hit(self, count: int = 1, extra: Mapping[str, object] | None = None) -> None:
        """Record ``count`` occurrences; log if the last line is older than ``interval_s``."""
        now = self._clock()
        with self._lock:
            self._unreported += count
            self._total += count
            if now < self._next_at:
                return
            self._next_at = now + self._interval_s
            unreported, total = self._unreported, self._total
            self._unreported = 0
        fields = dict(extra or {})
        fields.update({"occurrences": unreported, "occurrences_total": total})
        self._logger.log(self._level, "%s (%d since the last report, %d in total)",
                         self._message, unreported, total, extra=fields)
