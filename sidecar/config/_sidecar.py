"""The top-level config model (:class:`SidecarConfig`) and the keys beside the upstreams: TLS,
the event log, tracing, logging."""

from __future__ import annotations

import re
import socket
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from sidecar.config._fields import (
    Address,
    PemFile,
    PositiveFloat,
    PositiveInt,
    Ratio,
    _Model,
)
from sidecar.config._upstream import UpstreamConfig
from sidecar.events.settings import MAX_BATCH_SIZE, EventsSettings
from sidecar.tls import is_loopback

_EVENTS = EventsSettings()  # the single source of event pipeline defaults


class ShipperBackoff(_Model):
    """Retry delays of the event shipper: ``base_ms * multiplier**(n-1)``, capped, jittered."""

    base_ms: PositiveFloat = _EVENTS.backoff_base_ms
    max_ms: PositiveFloat = _EVENTS.backoff_max_ms
    multiplier: Annotated[float, Field(ge=1.0)] = _EVENTS.backoff_multiplier
    jitter: Annotated[float, Field(ge=0.0, lt=1.0)] = _EVENTS.backoff_jitter

    @model_validator(mode="after")
    def _max_not_below_base(self) -> ShipperBackoff:
        if self.max_ms < self.base_ms:
            raise ValueError(f"max_ms ({self.max_ms:g}) must be >= base_ms ({self.base_ms:g})")
        return self


# --- TLS: the proxy's listeners and its upstream calls --------------------------------------------


class ServerTlsConfig(_Model):
    """TLS for a listener (``listen_tls``, ``admin_tls``): its certificate chain and private key
    (PEM files, read at start). With ``client_ca_file`` every client must present a certificate
    signed by that CA (mTLS); without it any client may connect over TLS."""

    cert_file: PemFile
    key_file: PemFile
    client_ca_file: PemFile | None = None


class MetricsTlsConfig(_Model):
    """TLS for ``/metrics`` (``metrics_tls``): certificate chain and private key (PEM files,
    read at start). Prometheus then scrapes with ``scheme: https``."""

    cert_file: PemFile
    key_file: PemFile


class ClientTlsConfig(_Model):
    """TLS from the sidecar to the event log (``eventlog.tls``).

    ``ca_file``: the CA that signed the event log's certificate (absent: the system's roots).
    ``cert_file`` + ``key_file``: a client certificate, for an event log that requires mTLS.
    ``server_name``: the name to check in the event log's certificate instead of the host of
    ``eventlog.address``.
    """

    ca_file: PemFile | None = None
    cert_file: PemFile | None = None
    key_file: PemFile | None = None
    server_name: Annotated[str, Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _client_pair(self) -> ClientTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (a client certificate)")
        return self


class EventlogConfig(_Model):
    """Where breaker events go. Absent: events only reach traces, metrics and logs.

    Everything but ``address`` tunes the outbox and the shipper; defaults and meanings live in
    :class:`sidecar.events.settings.EventsSettings`.
    """

    address: Address
    outbox_path: Annotated[str, Field(min_length=1)] = _EVENTS.outbox_path
    queue_size: PositiveInt = _EVENTS.queue_size
    outbox_max_events: PositiveInt = _EVENTS.outbox_max_events
    outbox_keep_acked: Annotated[int, Field(ge=0)] = _EVENTS.outbox_keep_acked
    batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH_SIZE)] = _EVENTS.batch_size
    linger_ms: Annotated[float, Field(ge=0.0)] = _EVENTS.linger_ms
    flush_interval_ms: PositiveFloat = _EVENTS.flush_interval_ms
    append_timeout_ms: PositiveFloat = _EVENTS.append_timeout_ms
    backoff: ShipperBackoff = ShipperBackoff()
    shutdown_flush_timeout_ms: PositiveFloat = _EVENTS.shutdown_flush_timeout_ms
    tls: ClientTlsConfig | None = None

    def to_settings(self) -> EventsSettings:
        """The event pipeline's settings (validated again by EventsSettings itself)."""
        return EventsSettings(
            outbox_path=self.outbox_path,
            queue_size=self.queue_size,
            outbox_max_events=self.outbox_max_events,
            outbox_keep_acked=self.outbox_keep_acked,
            batch_size=self.batch_size,
            linger_ms=self.linger_ms,
            flush_interval_ms=self.flush_interval_ms,
            append_timeout_ms=self.append_timeout_ms,
            backoff_base_ms=self.backoff.base_ms,
            backoff_max_ms=self.backoff.max_ms,
            backoff_multiplier=self.backoff.multiplier,
            backoff_jitter=self.backoff.jitter,
            shutdown_flush_timeout_ms=self.shutdown_flush_timeout_ms,
        )


class MetricsConfig(_Model):
    """Prometheus metrics options. ``per_endpoint``: also request series per endpoint
    (``sidecar_endpoint_requests_total{upstream,endpoint,code}``); off by default, since
    endpoints come and go with discovery and each one would add series."""

    per_endpoint: bool = False


class TracingConfig(_Model):
    """OpenTelemetry tracing. No ``otlp_endpoint``: spans stay in-process."""

    otlp_endpoint: str | None = None
    sample_ratio: Ratio = 1.0


class LoggingConfig(_Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="before")
    @classmethod
    def _upper(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("level"), str):
            data["level"] = data["level"].upper()
        return data


def _default_instance() -> str:
    return socket.gethostname()


class SidecarConfig(_Model):
    """The whole sidecar configuration (every key with its default: docs/configuration.md)."""

    service: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")]
    instance: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")] = Field(
        default_factory=_default_instance
    )
    listen: Address = "127.0.0.1:15001"
    admin_listen: Address = "127.0.0.1:15000"
    metrics_listen: Address = "127.0.0.1:9464"
    listen_tls: ServerTlsConfig | None = None
    admin_tls: ServerTlsConfig | None = None
    metrics_tls: MetricsTlsConfig | None = None
    shutdown_grace_s: PositiveFloat = 10.0
    upstreams: Annotated[dict[str, UpstreamConfig], Field(min_length=1)]
    eventlog: EventlogConfig | None = None
    tracing: TracingConfig = TracingConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()

    @model_validator(mode="after")
    def _cross_checks(self) -> SidecarConfig:
        seen: dict[str, str] = {}
        problems: list[str] = []
        for name, upstream in self.upstreams.items():
            if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
                problems.append(f"upstreams.{name}: name may hold only letters, digits, _ . -")
            for route in upstream.routes:
                if route in seen:
                    problems.append(
                        f"upstreams.{name}.routes: {route!r} is already routed to {seen[route]!r}"
                    )
                seen[route] = name
            fb = upstream.fallback
            if fb is not None and fb.upstream is not None:
                if fb.upstream == name:
                    problems.append(f"upstreams.{name}.fallback.upstream: cannot be itself")
                elif fb.upstream not in self.upstreams:
                    problems.append(
                        f"upstreams.{name}.fallback.upstream: no upstream named {fb.upstream!r}"
                    )
        admin_host = self.admin_listen.rpartition(":")[0]
        if self.admin_tls is None and not is_loopback(admin_host):
            problems.append(
                f"admin_listen: {self.admin_listen} is reachable from other hosts, and the admin "
                "API changes breaker modes: set admin_tls (cert_file, key_file, and "
                "client_ca_file to require client certificates) or listen on 127.0.0.1, [::1] "
                "or localhost"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def stream(self) -> str:
        """This sidecar's event stream name: ``{service}/{instance}``."""
        return f"{self.service}/{self.instance}"
