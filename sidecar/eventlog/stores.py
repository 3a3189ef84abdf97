"""``open_store(url)``: pick the event store adapter by URL.

- ``sqlite:///abs/path.db`` (absolute path) or ``sqlite:relative/path.db``, with optional query
  settings ``?synchronous=FULL|NORMAL|OFF|EXTRA&read_threads=N&max_group_events=N``.
- ``nats://host:port[,host:port...][?...]``: the JetStream adapter; its package
  (``sidecar.eventlog.nats``, which must provide ``open_nats_store(url) -> EventStore``)
  is imported only when asked for, so the SQLite path never loads nats-py.

Blocking: opening a SQLite store opens the file (creating it and its folders unless
``create=False``) and creates the schema (call at startup);
the NATS adapter connects lazily on first use.

Example::

    store = open_store("sqlite:///var/lib/sidecar/eventlog.db")
"""

from __future__ import annotations

from importlib import import_module
from urllib.parse import parse_qsl, urlsplit

from sidecar.eventlog.store import EventStore

SCHEMES = ("sqlite", "nats", "tls")


def store_kind(url: str) -> str:
    """The ``store`` label of the event log's metrics: ``sqlite`` or ``jetstream``."""
    return "jetstream" if url.partition(":")[0] in ("nats", "tls") else "sqlite"


def allows_retention(url: str) -> bool:
    """Whether a store at ``url`` can be cut by retention: SQLite always; JetStream only with
    ``retention=1`` (its stream is then created without ``deny_purge``, which JetStream can
    never lift from an existing stream)."""
    if store_kind(url) != "jetstream":
        return True
    from urllib.parse import parse_qsl, urlsplit

    query = dict(parse_qsl(urlsplit(url).query))
    return query.get("retention", "0").strip().lower() in ("1", "true", "yes", "on")


def open_store(url: str, *, create: bool = True, nats_auth: object | None = None) -> EventStore:
    """The store for ``url``; ``ValueError`` naming the problem for a bad or unknown URL,
    ``StoreError`` when a SQLite file cannot be opened.

    ``create=False`` (the offline tools ``verify``/``rebuild``) refuses a SQLite file that does
    not exist yet instead of creating an empty log (a mistyped path must not "verify"). The
    JetStream adapter always creates its stream and bucket on first use. ``nats_auth``: a
    ``sidecar.eventlog.nats_auth.NatsAuth`` (TLS files, credential) for ``nats://``/``tls://``.
    """
    scheme, sep, _ = url.partition(":")
    if not sep or scheme not in SCHEMES:
        raise ValueError(
            f"store: unknown store URL {url!r}; expected sqlite:///PATH or nats://HOST:PORT"
        )
    if scheme in ("nats", "tls"):
        module = import_module("sidecar.eventlog.nats")
        store: EventStore = module.open_nats_store(url, nats_auth)
        return store
    return _open_sqlite(url, create)


def _open_sqlite(url: str, create: bool) -> EventStore:
    from sidecar.eventlog.sqlite_settings import SqliteSettings
    from sidecar.eventlog.sqlite_store import SqliteEventStore

    parts = urlsplit(url)
    if parts.netloc:
        raise ValueError(
            f"store: {url!r} names a host ({parts.netloc!r}); use sqlite:///ABSOLUTE/PATH "
            "or sqlite:RELATIVE/PATH"
        )
    if not parts.path:
        raise ValueError(f"store: {url!r} has no file path (sqlite:///PATH)")
    options = dict(parse_qsl(parts.query, strict_parsing=bool(parts.query)))
    converters = {
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
    return SqliteEventStore(parts.path, settings, create=create)
