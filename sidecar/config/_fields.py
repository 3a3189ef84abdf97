"""Field types and validators shared by every config model, and the error the loader raises.

Messages say what is allowed, so a refused file reads as a list of fixes.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from sidecar.tls import read_pem

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


_HOST = re.compile(r"\[[0-9A-Fa-f:.]+(?:%[A-Za-z0-9._-]+)?\]|[A-Za-z0-9._:-]+")
"""A host: a DNS name or IPv4 address, or a bracketed IPv6 address (the event log refuses
endpoint events naming anything else, so the config must too)."""


def _address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if (not sep or not host or not port.isdigit() or not 0 < int(port) < 65536
            or not _HOST.fullmatch(host)):
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
