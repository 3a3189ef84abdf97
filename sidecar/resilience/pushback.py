"""The server's retry pushback (gRFC A6): trailer ``grpc-retry-pushback-ms``.

A non-negative decimal integer is the delay, in milliseconds, before the next attempt (it
replaces the backoff). A negative or malformed value, or more than one value, means "do not
retry this call". No header: the client's own backoff applies.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from typing import Final, Literal

__all__ = ["PUSHBACK_KEY", "STOP", "Stop", "parse_pushback"]

PUSHBACK_KEY: Final = "grpc-retry-pushback-ms"
_DECIMAL: Final = re.compile(r"-?[0-9]{1,10}")
_MAX_PUSHBACK_MS: Final = 2**31 - 1
"""The largest pushback gRPC's 32-bit field can carry; a bigger number is malformed."""


class Stop(enum.Enum):
    """The server asked for no retry."""

    STOP = "stop"


STOP: Final[Literal[Stop.STOP]] = Stop.STOP


def parse_pushback(values: Sequence[str]) -> float | Literal[Stop.STOP] | None:
    """The delay in seconds the server asks for, ``None`` when it said nothing, or ``STOP``."""
    if not values:
        return None
    if len(values) > 1:
        return STOP
    text = values[0].strip()
    if not _DECIMAL.fullmatch(text):
        return STOP
    millis = int(text)
    if millis < 0 or millis > _MAX_PUSHBACK_MS:
        return STOP
    return millis / 1000.0
