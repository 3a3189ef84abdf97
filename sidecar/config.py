"""Typed, validated sidecar configuration: YAML in, clear errors out.

A bad file is refused as a whole with one line per problem, each naming the key path::

    upstreams.payments.breaker.failure_rate: must be > 0 and <= 1

Unknown keys are errors (a typo must never pass silently). String values may use
``${VAR}`` or ``${VAR:-default}`` to read the environment, e.g. ``instance: ${HOSTNAME}``.

Defaults live in one place each: breaker defaults in :class:`sidecar.breaker.BreakerSettings`,
everything else in the field defaults below.

Example::

    from sidecar.config import load_config
    config = load_config("sidecar.yaml")   # raises ConfigError with every problem listed
    settings = config.upstreams["payments"].breaker.to_settings()
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from sidecar.breaker import BreakerSettings, Mode
from sidecar.events.settings import MAX_BATCH_SIZE, EventsSettings
from sidecar.tls import is_loopback, read_pem

_BREAKER = BreakerSettings()  # the single source of breaker defaults
_EVENTS = EventsSettings()  # the single source of event pipeline defaults

# gRPC status code names accepted in failure_codes and fixed-status fallbacks.
GRPC_CODES: frozenset[str] = frozenset(
    {
        "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
        "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
        "UNAUTHENTICATED",
    }
)
DEFAULT_FAILURE_CODES: tuple[str, ...] = (
    "UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN", "RESOURCE_EXHAUSTED",
)


class ConfigError(Exception):
    """The configuration was refused.

    ``problems`` holds one ``key.path: what is wrong`` line per problem.
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"invalid config {source}:\n" + "\n".join(f"  {p}" for p in problems))


# --- field validators (messages say what is allowed) -----------------------------------------


def _rate(value: float) -> float:
    if not 0 < value <= 1:
        raise ValueError("must be > 0 and <= 1")
    return value


def _ratio(value: float) -> float:
    if not 0 <= value <= 1:
        raise ValueError("must be >= 0 and <= 1")
    return value


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def _address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"must be HOST:PORT with a port from 1 to 65535, got {value!r}")
    return value


def _code(value: str) -> str:
    upper = value.upper()
    if upper not in GRPC_CODES:
        expected = ", ".join(sorted(GRPC_CODES))
        raise ValueError(f"unknown gRPC status code {value!r}; expected one of {expected}")
    return upper


def _route(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"route {value!r} must be a method-path prefix starting with '/'")
    return value


Rate = Annotated[float, AfterValidator(_rate)]
Ratio = Annotated[float, AfterValidator(_ratio)]
PositiveFloat = Annotated[float, AfterValidator(_positive)]
PositiveInt = Annotated[int, Field(ge=1)]
Address = Annotated[str, AfterValidator(_address)]
StatusCodeName = Annotated[str, AfterValidator(_code)]
Route = Annotated[str, AfterValidator(_route)]


def _pem_file(value: str) -> str:
    read_pem(value, key="")  # TlsFileError (a ValueError) naming the path, never the content
    return value


PemFile = Annotated[str, Field(min_length=1), AfterValidator(_pem_file)]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, str_strip_whitespace=True, allow_inf_nan=False
    )


# --- breaker -------------------------------------------------------------------------------


class CountWindow(_Model):
    """Judge the last ``size`` calls."""

    type: Literal["count"] = "count"
    size: PositiveInt = _BREAKER.window_size


class TimeWindow(_Model):
    """Judge the calls of the last ``seconds``, kept in ``buckets`` buckets."""

    type: Literal["time"]
    seconds: PositiveFloat = _BREAKER.window_seconds
    buckets: PositiveInt = _BREAKER.window_buckets


class OpenDuration(_Model):
    """Adaptive open duration: ``base_ms * multiplier**(streak-1)``, capped, with jitter."""

    base_ms: PositiveFloat = _BREAKER.open_base_ms
    multiplier: Annotated[float, Field(ge=1.0)] = _BREAKER.open_multiplier
    max_ms: PositiveFloat = _BREAKER.open_max_ms
    jitter: Annotated[float, Field(ge=0.0, lt=1.0)] = _BREAKER.open_jitter

    @model_validator(mode="after")
    def _max_not_below_base(self) -> OpenDuration:
        if self.max_ms < self.base_ms:
            raise ValueError(f"max_ms ({self.max_ms:g}) must be >= base_ms ({self.base_ms:g})")
        return self


class BreakerConfig(_Model):
    """One upstream's breaker; converts to the breaker's own :class:`BreakerSettings`."""

    window: Annotated[CountWindow | TimeWindow, Field(discriminator="type")] = CountWindow()
    minimum_calls: PositiveInt = _BREAKER.minimum_calls
    failure_rate: Rate = _BREAKER.failure_rate
    slow_call_ms: PositiveFloat = _BREAKER.slow_call_ms
    slow_call_rate: Rate = _BREAKER.slow_call_rate
    consecutive_failures: PositiveInt | None = _BREAKER.consecutive_failures
    failure_codes: tuple[StatusCodeName, ...] = DEFAULT_FAILURE_CODES
    half_open_probes: PositiveInt = _BREAKER.half_open_probes
    probe_timeout_ms: PositiveFloat = _BREAKER.probe_timeout_ms
    streak_decay_windows: PositiveInt = _BREAKER.streak_decay_windows
    open: OpenDuration = OpenDuration()
    mode: Mode = _BREAKER.mode

    @model_validator(mode="before")
    @classmethod
    def _window_type_defaults_to_count(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("window"), dict):
            data["window"].setdefault("type", "count")
        return data

    @model_validator(mode="after")
    def _count_window_can_hold_the_thresholds(self) -> BreakerConfig:
        # A count window never holds more than `size` calls: a larger threshold could never
        # be reached, so say so instead of letting the breaker quietly clamp it.
        if isinstance(self.window, CountWindow):
            size = self.window.size
            if self.minimum_calls > size:
                raise ValueError(
                    f"minimum_calls ({self.minimum_calls}) must be <= window.size ({size})"
                )
            if self.consecutive_failures is not None and self.consecutive_failures > size:
                raise ValueError(
                    f"consecutive_failures ({self.consecutive_failures}) must be <= "
                    f"window.size ({size})"
                )
        return self

    def to_settings(self) -> BreakerSettings:
        """The breaker's settings (validated again by BreakerSettings itself)."""
        window = self.window
        return BreakerSettings(
            window_type=window.type,
            window_size=window.size if isinstance(window, CountWindow) else _BREAKER.window_size,
            window_seconds=(
                window.seconds if isinstance(window, TimeWindow) else _BREAKER.window_seconds
            ),
            window_buckets=(
                window.buckets if isinstance(window, TimeWindow) else _BREAKER.window_buckets
            ),
            minimum_calls=self.minimum_calls,
            failure_rate=self.failure_rate,
            slow_call_ms=self.slow_call_ms,
            slow_call_rate=self.slow_call_rate,
            consecutive_failures=self.consecutive_failures,
            half_open_probes=self.half_open_probes,
            probe_timeout_ms=self.probe_timeout_ms,
            open_base_ms=self.open.base_ms,
            open_multiplier=self.open.multiplier,
            open_max_ms=self.open.max_ms,
            open_jitter=self.open.jitter,
            streak_decay_windows=self.streak_decay_windows,
            mode=self.mode,
        )


# --- upstreams -----------------------------------------------------------------------------


class Fallback(_Model):
    """What answers while the breaker is OPEN: another upstream, or a fixed status."""

    upstream: str | None = None
    status: StatusCodeName | None = None
    message: str = "upstream unavailable (circuit open)"

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Fallback:
        if (self.upstream is None) == (self.status is None):
            raise ValueError("set exactly one of 'upstream' or 'status'")
        if self.status == "OK":
            raise ValueError("status must be an error code, not OK")
        return self


DEFAULT_KEEPALIVE_MS = 30_000
"""HTTP/2 keepalive ping interval on a proxy's upstream channel (``keepalive_ms``). Pings go
out only while calls are in flight and nothing was read for this long, so a default gRPC
server (which tolerates pings every 5 min without calls, and resets its count whenever it
sends data) never answers them with GOAWAY ``too_many_pings``."""
DEFAULT_KEEPALIVE_TIMEOUT_MS = 10_000
"""How long a keepalive ping may go unanswered before the connection is dropped."""
MIN_KEEPALIVE_MS = 1_000
"""Smallest ``keepalive_ms`` accepted: more frequent pings would be abuse to most servers."""


class UpstreamConfig(_Model):
    """An upstream service: where it is, which methods go to it, and how it is protected.

    ``keepalive_ms`` (None turns it off) makes the proxy's channel notice a connection that a
    partition or a lost NAT entry silently swallowed, while calls are waiting on it.
    """

    address: Address
    routes: Annotated[tuple[Route, ...], Field(min_length=1)]
    timeout_ms: PositiveFloat = 2000.0
    per_method: bool = False
    max_concurrent_requests: PositiveInt = 1000
    keepalive_ms: Annotated[int, Field(ge=MIN_KEEPALIVE_MS)] | None = DEFAULT_KEEPALIVE_MS
    keepalive_timeout_ms: PositiveInt = DEFAULT_KEEPALIVE_TIMEOUT_MS
    breaker: BreakerConfig = BreakerConfig()
    fallback: Fallback | None = None


# --- the rest ------------------------------------------------------------------------------


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


# --- TLS (issue 9: security) ----------------------------------------------------------------


class ServerTlsConfig(_Model):
    """TLS for a listener (``listen_tls``, ``admin_tls``): its certificate chain and private key
    (PEM files, read at start). With ``client_ca_file`` every client must present a certificate
    signed by that CA (mTLS); without it any client may connect over TLS."""

    cert_file: PemFile
    key_file: PemFile
    client_ca_file: PemFile | None = None


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
    """The whole sidecar configuration (DESIGN.md section 4)."""

    service: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")]
    instance: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")] = Field(
        default_factory=_default_instance
    )
    listen: Address = "127.0.0.1:15001"
    admin_listen: Address = "127.0.0.1:15000"
    metrics_listen: Address = "127.0.0.1:9464"
    listen_tls: ServerTlsConfig | None = None
    admin_tls: ServerTlsConfig | None = None
    shutdown_grace_s: PositiveFloat = 10.0
    upstreams: Annotated[dict[str, UpstreamConfig], Field(min_length=1)]
    eventlog: EventlogConfig | None = None
    tracing: TracingConfig = TracingConfig()
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


# --- loading ----------------------------------------------------------------------------------

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


# A config expands aliases (``*anchor``) into copies; refuse files whose aliases multiply
# past this many values ("billion laughs") instead of spending minutes expanding them.
MAX_CONFIG_VALUES = 100_000


class _Expander:
    """Replaces ``${VAR}`` / ``${VAR:-default}`` in every string value, recording problems.

    Also the one place that walks the whole tree, so it refuses what would make validation
    blow up: a node that contains itself (a recursive alias) and trees that aliases multiply
    beyond :data:`MAX_CONFIG_VALUES`.
    """

    def __init__(self, env: Mapping[str, str], problems: list[str]) -> None:
        self.env = env
        self.problems = problems
        self.values = 0
        self._on_path: set[int] = set()

    def expand(self, node: Any, path: str) -> Any:
        self.values += 1
        if self.values > MAX_CONFIG_VALUES:
            raise _TooLarge
        if isinstance(node, dict | list):
            if id(node) in self._on_path:
                raise _SelfReference(path or "(top level)")
            self._on_path.add(id(node))
            try:
                if isinstance(node, dict):
                    return {k: self.expand(v, f"{path}.{k}" if path else str(k))
                            for k, v in node.items()}
                return [self.expand(v, f"{path}[{i}]") for i, v in enumerate(node)]
            finally:
                self._on_path.discard(id(node))
        if isinstance(node, str):
            return _ENV_REF.sub(lambda match: self._lookup(match, path), node)
        return node

    def _lookup(self, match: re.Match[str], path: str) -> str:
        name, default = match.group(1), match.group(2)
        if name in self.env:
            return self.env[name]
        if default is not None:
            return default
        self.problems.append(f"{path}: environment variable {name} is not set")
        return ""


class _TooLarge(Exception):
    pass


class _SelfReference(Exception):
    pass


def _format_loc(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    previous: int | str | None = None
    for item in loc:
        if previous == "window" and item in ("count", "time"):
            pass  # pydantic's discriminator tag, not a user key
        elif isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + item)
        previous = item
    return "".join(parts) or "(top level)"


def _format_errors(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors(include_url=False):
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see the configuration reference)"
        elif item["type"] == "missing":
            message = "required key is missing"
        if not item["loc"] and ": " in message:  # cross-checks already name their key paths
            problems.extend(message.split("; "))
            continue
        problems.append(f"{_format_loc(item['loc'])}: {message}")
    return problems


def parse_config(
    text: str, source: str = "<string>", env: Mapping[str, str] | None = None
) -> SidecarConfig:
    """Parse and validate YAML text; raise :class:`ConfigError` listing every problem."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"(yaml): {exc}"]) from None
    except RecursionError:
        raise ConfigError(source, ["(yaml): nested too deeply"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, ["(top level): must be a mapping of keys to values"])
    problems: list[str] = []
    try:
        expanded = _Expander(os.environ if env is None else env, problems).expand(raw, "")
    except _SelfReference as exc:
        raise ConfigError(source, [f"{exc}: an alias refers to a value that contains it"]) from None
    except _TooLarge:
        raise ConfigError(
            source, [f"(yaml): more than {MAX_CONFIG_VALUES} values once aliases are expanded"]
        ) from None
    if problems:
        raise ConfigError(source, problems)
    try:
        return SidecarConfig.model_validate(expanded)
    except ValidationError as exc:
        raise ConfigError(source, _format_errors(exc)) from None


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> SidecarConfig:
    """Read, expand and validate a YAML config file."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(str(file), [f"(file): cannot read: {exc.strerror}"]) from None
    return parse_config(text, str(file), env)


def config_digest(config: SidecarConfig) -> str:
    """SHA-256 of the effective config, for the ConfigApplied event and logs."""
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()
