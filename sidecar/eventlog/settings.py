"""Settings of the event log server: every bound, limit and interval, defaults in one place.

Values resolve argument → environment → ``DEFAULT_*`` constant (the OpenTelemetry SDK's rule)
and are validated once, at construction, with a ``ValueError`` naming the setting. The bearer
token is kept out of ``repr`` so it never reaches a log line.

Example::

    settings = ServerSettings(store_url="sqlite:///var/lib/eventlog.db", listen="127.0.0.1:7070")
    token = resolve_token(token_file=None)   # SIDECAR_EVENTLOG_TOKEN / _TOKEN_FILE, or None
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from sidecar.eventlog.port import limits
from sidecar.eventlog.retention.policy import RetentionPolicy

# --- addresses -------------------------------------------------------------------------------
DEFAULT_LISTEN: Final = "127.0.0.1:7070"
"""Where the gRPC API listens unless ``--listen`` says otherwise."""

# --- request limits ----------------------------------------------------------------------------
DEFAULT_MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
"""Largest request or response message the server accepts or sends."""
DEFAULT_MAX_BATCH_EVENTS: Final = 1000
"""Most events one Append request may carry (the batch is one atomic commit)."""
DEFAULT_READ_LIMIT: Final = limits.DEFAULT_READ_LIMIT
"""Events per ReadStream/ReadAll page when the request asks for 0 (the port's default)."""
DEFAULT_MAX_READ_LIMIT: Final = limits.MAX_READ_LIMIT
"""Most events one ReadStream/ReadAll page returns, whatever the request asks (the most a store
read takes)."""
DEFAULT_MAX_PENDING_APPENDS: Final = 1000
"""Append requests served at once; one more is refused at once with RESOURCE_EXHAUSTED and a
``grpc-retry-pushback-ms`` hint (:mod:`sidecar.eventlog.api.admission`). A shipper has at most one
Append in flight, so this is about the number of sidecars shipping in the same moment: 1000 is
above a normal deployment per log replica (the 200-sidecar storm benchmark stays below it) and
bounds the decoded requests held to ~1000 x one batch (500 events of ~0.5 KB by default)."""

# --- Subscribe ---------------------------------------------------------------------------------
DEFAULT_HEARTBEAT_INTERVAL_S: Final = 5.0
"""Heartbeat period of a subscription with no matching event, when the request asks for 0."""
MIN_HEARTBEAT_INTERVAL_S: Final = 0.05
"""Shortest heartbeat period a request may ask for (protects the server from busy loops)."""
DEFAULT_SUBSCRIBER_BUFFER_EVENTS: Final = 1000
"""Events queued for one live subscriber before it is disconnected as too slow."""
DEFAULT_SUBSCRIBE_PAGE_EVENTS: Final = 500
"""Events read from the store per step while a subscriber catches up."""
DEFAULT_MAX_SUBSCRIBERS: Final = 256
"""Subscriptions served at once; one more is refused with RESOURCE_EXHAUSTED."""
DEFAULT_LIVE_WAIT_S: Final = 1.0
"""Longest wait for a new append before a live subscription re-reads the head."""

# --- projections -------------------------------------------------------------------------------
DEFAULT_PROJECTION_BATCH_EVENTS: Final = 5000
"""Events the in-server projection follower folds per step."""
DEFAULT_PROJECTION_WAIT_S: Final = 1.0
"""Longest wait of the projection follower for new appends before looking again."""

# --- lifecycle ---------------------------------------------------------------------------------
DEFAULT_SHUTDOWN_GRACE_S: Final = 5.0
"""On SIGTERM/SIGINT: how long in-flight RPCs may finish before they are cancelled."""

DEFAULT_SHUTDOWN_STEP_TIMEOUT_S: Final = 10.0
"""After the grace period: the most each later shutdown step (stop the projection follower,
save checkpoints, close the store) may take before the server goes on without it."""

# --- environment -------------------------------------------------------------------------------
ENV_TOKEN: Final = "SIDECAR_EVENTLOG_TOKEN"
"""Environment variable holding the bearer token itself."""
ENV_TOKEN_FILE: Final = "SIDECAR_EVENTLOG_TOKEN_FILE"
"""Environment variable naming a file that holds the bearer token."""
ENV_READS_REQUIRE_TOKEN: Final = "SIDECAR_EVENTLOG_READS_REQUIRE_TOKEN"
"""``1``/``true``: reads need the token too (Append always does when a token is set)."""

TOKEN_METADATA_KEY: Final = "authorization"
"""gRPC metadata key carrying ``Bearer <token>``."""
RESUME_METADATA_KEY: Final = "resume-from-position"
"""Trailing metadata of a Subscribe ended for slowness: the position to resume from."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files for TLS; with ``client_ca_file`` clients must present a certificate (mTLS)."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    def read(self) -> tuple[bytes, bytes, bytes | None]:
        """The key, certificate and client CA bytes (blocking file reads; call at startup)."""
        ca = self.client_ca_file.read_bytes() if self.client_ca_file is not None else None
        return self.key_file.read_bytes(), self.cert_file.read_bytes(), ca


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Everything ``sidecar eventlog serve`` needs; validated on construction."""

    store_url: str
    listen: str = DEFAULT_LISTEN
    metrics_listen: str | None = None
    metrics_tls: tuple[Path, Path] | None = None  # (cert, key) PEM files for /metrics over TLS
    token: str | None = field(default=None, repr=False)
    reads_require_token: bool = False
    tls: TlsFiles | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS
    default_read_limit: int = DEFAULT_READ_LIMIT
    max_read_limit: int = DEFAULT_MAX_READ_LIMIT
    max_pending_appends: int = DEFAULT_MAX_PENDING_APPENDS
    default_heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S
    subscriber_buffer_events: int = DEFAULT_SUBSCRIBER_BUFFER_EVENTS
    subscribe_page_events: int = DEFAULT_SUBSCRIBE_PAGE_EVENTS
    max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS
    live_wait_s: float = DEFAULT_LIVE_WAIT_S
    projection_batch_events: int = DEFAULT_PROJECTION_BATCH_EVENTS
    projection_wait_s: float = DEFAULT_PROJECTION_WAIT_S
    shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S
    shutdown_step_timeout_s: float = DEFAULT_SHUTDOWN_STEP_TIMEOUT_S
    retention: RetentionPolicy | None = None  # --retain-days / --retain-events-per-stream

    def __post_init__(self) -> None:
        if not self.store_url:
            raise ValueError("store: a store URL is required (e.g. sqlite:///var/lib/eventlog.db)")
        parse_host_port(self.listen, "listen")
        if self.metrics_listen is not None:
            parse_host_port(self.metrics_listen, "metrics_listen")
        if self.token is not None and not self.token:
            raise ValueError("token: must not be empty when given")
        if self.reads_require_token and self.token is None:
            raise ValueError("reads_require_token: needs a token (--token-file or env)")
        for name in (
            "max_message_bytes",
            "max_batch_events",
            "default_read_limit",
            "max_read_limit",
            "max_pending_appends",
            "subscriber_buffer_events",
            "subscribe_page_events",
            "max_subscribers",
            "projection_batch_events",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in _FLOAT_SETTINGS:  # NaN passes every comparison below: refuse it first
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or not math.isfinite(value)):
                raise ValueError(f"{name}: must be a finite number, got {value!r}")
        if self.default_read_limit > self.max_read_limit:
            raise ValueError(
                f"default_read_limit: {self.default_read_limit} exceeds max_read_limit "
                f"{self.max_read_limit}"
            )
        if self.default_heartbeat_interval_s < MIN_HEARTBEAT_INTERVAL_S:
            raise ValueError(
                f"default_heartbeat_interval_s: must be >= {MIN_HEARTBEAT_INTERVAL_S}, "
                f"got {self.default_heartbeat_interval_s}"
            )
        for name in ("live_wait_s", "projection_wait_s", "shutdown_step_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.shutdown_grace_s < 0:
            raise ValueError(f"shutdown_grace_s: must be >= 0, got {self.shutdown_grace_s}")


_FLOAT_SETTINGS: Final = (
    "default_heartbeat_interval_s",
    "live_wait_s",
    "projection_wait_s",
    "shutdown_grace_s",
    "shutdown_step_timeout_s",
)
"""The float fields of :class:`ServerSettings` (each refused when NaN or infinite)."""


def parse_host_port(value: str, name: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` too); ``ValueError`` naming the setting otherwise."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{name}: expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port_text)


def resolve_token(token_file: Path | None, env: dict[str, str] | None = None) -> str | None:
    """The bearer token: ``token_file`` argument, else ``$SIDECAR_EVENTLOG_TOKEN``, else the file
    named by ``$SIDECAR_EVENTLOG_TOKEN_FILE``, else None. Surrounding whitespace is stripped.

    Raises ``ValueError`` (never containing the token) for an unreadable or empty file.
    """
    environ = os.environ if env is None else env
    path = token_file
    if path is None:
        value = environ.get(ENV_TOKEN)
        if value is not None:
            if not value.strip():
                raise ValueError(f"{ENV_TOKEN}: is set but empty")
            return value.strip()
        file_name = environ.get(ENV_TOKEN_FILE)
        if not file_name:
            return None
        path = Path(file_name)
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"token file {str(path)!r}: cannot read it ({exc.strerror})") from None
    if not token:
        raise ValueError(f"token file {str(path)!r}: is empty")
    return token


def env_flag(name: str, env: dict[str, str] | None = None) -> bool:
    """True when the environment variable is ``1``, ``true`` or ``yes`` (any case)."""
    environ = os.environ if env is None else env
    return environ.get(name, "").strip().lower() in {"1", "true", "yes"}
