"""Time-ordered event ids (UUID version 7, RFC 9562).

A v7 UUID starts with the Unix time in milliseconds, so ids made later sort later, which keeps
the event log's UNIQUE index on ``event_id`` append-mostly. Within one millisecond this
generator counts in the 12-bit ``rand_a`` field (RFC 9562 method 1), so ids from one process
are strictly increasing even when the clock stalls or steps back.

Thread-safe (one lock around the counter); no I/O except ``os.urandom``.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable

_COUNTER_MAX = 0xFFF


class Uuid7Generator:
    """Makes strictly increasing v7 UUID strings. ``clock_ms`` is injectable for tests.

    >>> gen = Uuid7Generator(clock_ms=lambda: 1_700_000_000_000)
    >>> a, b = gen(), gen()
    >>> a < b and uuid.UUID(a).version == 7
    True
    """

    def __init__(self, clock_ms: Callable[[], int] | None = None) -> None:
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._lock = threading.Lock()
        self._last_ms = -1
        self._counter = 0

    def __call__(self) -> str:
        with self._lock:
            now_ms = self._clock_ms()
            if now_ms > self._last_ms:
                self._last_ms = now_ms
                self._counter = int.from_bytes(os.urandom(2), "big") & 0x7FF  # leave headroom
            else:
                self._counter += 1
                if self._counter > _COUNTER_MAX:
                    self._last_ms += 1
                    self._counter = 0
            ms, counter = self._last_ms, self._counter
        rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
        value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
        return str(uuid.UUID(int=value))


_default = Uuid7Generator()


def uuid7() -> str:
    """A new v7 UUID string from the process-wide generator (strictly increasing)."""
    return _default()
