"""Tuning of the SQLite event store: every bound with its default, validated on construction.

Set from the store URL's query (``sqlite:///path.db?synchronous=NORMAL&read_threads=4``):
``sqlite_from_url`` parses it, ``sidecar.eventlog.port.opening`` calls it for ``sqlite:`` URLs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

DEFAULT_SYNCHRONOUS: Final = "FULL"
"""SQLite ``synchronous`` pragma: FULL fsyncs the WAL on every commit (acknowledged = durable)."""
DEFAULT_READ_THREADS: Final = 2
"""Threads (each with its own connection) serving reads."""
DEFAULT_MAX_GROUP_EVENTS: Final = 20_000
"""Most events the writer gathers into one transaction before committing."""
DEFAULT_BUSY_TIMEOUT_S: Final = 10.0
"""How long a connection waits for a lock held by another connection before failing."""

SYNCHRONOUS_MODES: Final = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})


@dataclass(frozen=True, slots=True)
class SqliteSettings:
    """Tuning of the SQLite adapter; every default lives in the ``DEFAULT_*`` constants above."""

    synchronous: str = DEFAULT_SYNCHRONOUS
    read_threads: int = DEFAULT_READ_THREADS
    max_group_events: int = DEFAULT_MAX_GROUP_EVENTS
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ValueError(
                f"synchronous: {self.synchronous!r} is not one of {sorted(SYNCHRONOUS_MODES)}"
            )
        if self.read_threads < 1:
            raise ValueError(f"read_threads: must be >= 1, got {self.read_threads}")
        if self.max_group_events < 1:
            raise ValueError(f"max_group_events: must be >= 1, got {self.max_group_events}")
        if not math.isfinite(self.busy_timeout_s) or self.busy_timeout_s < 0:
            raise ValueError(f"busy_timeout_s: must be a finite number >= 0, "
                             f"got {self.busy_timeout_s}")


def sqlite_from_url(url: str) -> tuple[str, SqliteSettings]:
    """The file path and settings of a ``sqlite:`` store URL; ``ValueError`` naming the problem.

    ``sqlite:///ABSOLUTE/PATH`` or ``sqlite:RELATIVE/PATH``, with the query setting the fields of
    ``SqliteSettings`` (``?synchronous=NORMAL&read_threads=4``); a host, a missing path or an
    unknown setting is refused rather than guessed at.
    """
    parts = urlsplit(url)
    if parts.netloc:
        raise ValueError(
            f"store: {url!r} names a host ({parts.netloc!r}); use sqlite:///ABSOLUTE/PATH "
            "or sqlite:RELATIVE/PATH"
        )
    if not parts.path:
        raise ValueError(f"store: {url!r} has no file path (sqlite:///PATH)")
    options = dict(parse_qsl(parts.query, strict_parsing=bool(parts.query)))
    converters: dict[str, Callable[[str], Any]] = {
        "synchronous": str,
        "read_threads": int,
        "max_group_events": int,
        "busy_timeout_s": float,
    }
    unknown = sorted(set(options) - set(converters))
    if unknown:
        raise ValueError(f"store: unknown sqlite option(s) {unknown}; known: {sorted(converters)}")
    try:
        kwargs = {name: converters[name](value) for name, value in options.items()}
        settings = SqliteSettings(**kwargs)  # defaults live in SqliteSettings
    except ValueError as exc:
        raise ValueError(f"store: {url!r}: {exc}") from None
    return parts.path, settings
