"""``open_store(url)``: pick the event store adapter by URL, from a table of URL schemes.

- ``sqlite:///abs/path.db`` (absolute path) or ``sqlite:relative/path.db``, with optional query
  settings ``?synchronous=FULL|NORMAL|OFF|EXTRA&read_threads=N&max_group_events=N``
  (``sidecar.eventlog.sqlite.settings.sqlite_from_url``).
- ``nats://host:port[,host:port...][?...]`` (``tls://`` for TLS): the JetStream adapter
  (``sidecar.eventlog.nats.open_nats_store``).

Each scheme's opener imports its adapter only when asked for, so the SQLite path never loads
nats-py, and a new adapter is one opener and one row of ``SCHEMES``.

Blocking: opening a SQLite store opens the file (creating it and its folders unless
``create=False``) and creates the schema (call at startup);
the NATS adapter connects lazily on first use.

Example::

    store = open_store("sqlite:///var/lib/sidecar/eventlog.db")
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, cast
from urllib.parse import parse_qsl, urlsplit

from sidecar.eventlog.port.store import EventStore

__all__ = ["SCHEMES", "Scheme", "allows_retention", "open_store", "store_kind"]


@dataclass(frozen=True, slots=True)
class Scheme:
    """How one URL scheme opens its store.

    ``opener(url, create, nats_auth)`` makes the store (see ``open_store``); ``kind`` is the
    ``store`` label of the event log's metrics; ``retention_query`` names the URL setting
    that must be on before retention may cut (None: it always may).
    """

    opener: Callable[[str, bool, object | None], EventStore]
    kind: str
    retention_query: str | None = None


def _open_sqlite(url: str, create: bool, nats_auth: object | None) -> EventStore:
    from sidecar.eventlog.sqlite.settings import sqlite_from_url
    from sidecar.eventlog.sqlite.store import SqliteEventStore

    path, settings = sqlite_from_url(url)
    return SqliteEventStore(path, settings, create=create)


def _open_nats(url: str, create: bool, nats_auth: object | None) -> EventStore:
    from sidecar.eventlog.nats import open_nats_store
    from sidecar.eventlog.nats_auth import NatsAuth

    return open_nats_store(url, cast("NatsAuth | None", nats_auth))


SCHEMES: Final[dict[str, Scheme]] = {
    "sqlite": Scheme(_open_sqlite, "sqlite"),
    "nats": Scheme(_open_nats, "jetstream", "retention"),
    "tls": Scheme(_open_nats, "jetstream", "retention"),
}


def _scheme(url: str) -> Scheme | None:
    name, sep, _ = url.partition(":")
    return SCHEMES.get(name) if sep else None


def store_kind(url: str) -> str:
    """The ``store`` label of the event log's metrics: ``sqlite`` or ``jetstream``."""
    scheme = _scheme(url)
    return scheme.kind if scheme is not None else "sqlite"


def allows_retention(url: str) -> bool:
    """Whether a store at ``url`` can be cut by retention: SQLite always; JetStream only with
    ``retention=1`` (its stream is then created without ``deny_purge``, which JetStream can
    never lift from an existing stream)."""
    scheme = _scheme(url)
    if scheme is None or scheme.retention_query is None:
        return True
    query = dict(parse_qsl(urlsplit(url).query))
    return query.get(scheme.retention_query, "0").strip().lower() in ("1", "true", "yes", "on")


def open_store(url: str, *, create: bool = True, nats_auth: object | None = None) -> EventStore:
    """The store for ``url``; ``ValueError`` naming the problem for a bad or unknown URL,
    ``StoreError`` when a SQLite file cannot be opened.

    ``create=False`` (the offline tools ``verify``/``rebuild``) refuses a SQLite file that does
    not exist yet instead of creating an empty log (a mistyped path must not "verify"). The
    JetStream adapter always creates its stream and bucket on first use. ``nats_auth``: a
    ``sidecar.eventlog.nats_auth.NatsAuth`` (TLS files, credential) for ``nats://``/``tls://``.
    """
    scheme = _scheme(url)
    if scheme is None:
        raise ValueError(
            f"store: unknown store URL {url!r}; expected sqlite:///PATH or nats://HOST:PORT"
        )
    return scheme.opener(url, create, nats_auth)
