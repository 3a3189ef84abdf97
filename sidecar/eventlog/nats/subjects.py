"""Subject names of the JetStream log: one subject per (stream, version), base64 tokens.

The event at version ``v`` of stream ``svc/inst`` is on ``<STREAM>.ev.<b64 svc>.<b64 inst>.<v>``
(the package docstring says why); commits are announced on ``<STREAM>.head``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from sidecar.eventlog.port import EventFilter, StoreError


def subject_token(text: str) -> str:
    """A subject token for any string: unpadded URL-safe base64, "=" for the empty string."""
    if not text:
        return "="
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def _untoken(token: str) -> str:
    if token == "=":
        return ""
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()


def stream_tokens(stream: str) -> str:
    """``svc/inst`` → ``<b64 svc>.<b64 inst>``; a name without "/" → ``<b64 name>.~``."""
    service, sep, instance = stream.partition("/")
    return f"{subject_token(service)}.{subject_token(instance) if sep else '~'}"


def _stream_from_tokens(service_token: str, instance_token: str) -> str:
    service = _untoken(service_token)
    if instance_token == "~":
        return service
    return f"{service}/{_untoken(instance_token)}"


@dataclass(frozen=True, slots=True)
class Subjects:
    """Subject names of one deployment (prefix = the JetStream stream name)."""

    prefix: str

    @property
    def events(self) -> str:
        return f"{self.prefix}.ev.>"

    @property
    def head(self) -> str:
        return f"{self.prefix}.head"

    def stream_all(self, stream: str) -> str:
        return f"{self.prefix}.ev.{stream_tokens(stream)}.*"

    def slot(self, stream: str, version: int) -> str:
        return f"{self.prefix}.ev.{stream_tokens(stream)}.{version}"

    def first_versions(self) -> str:
        return f"{self.prefix}.ev.*.*.1"

    def filter_for(self, flt: EventFilter) -> str | None:
        """A subject filter doing the service/instance part of ``flt`` on the server."""
        if flt.service and flt.instance:
            return f"{self.prefix}.ev.{subject_token(flt.service)}.{subject_token(flt.instance)}.*"
        if flt.service:
            return f"{self.prefix}.ev.{subject_token(flt.service)}.*.*"
        return None

    def stream_of(self, subject: str) -> str:
        parts = subject.split(".")
        if len(parts) != 5 or parts[1] != "ev":
            raise StoreError(f"subject {subject!r} is not an event subject of {self.prefix}")
        return _stream_from_tokens(parts[2], parts[3])


def stream_sequence(reply: str) -> int:
    """The stream sequence in a JetStream delivery's reply subject:
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>``,
    or the form with ``<domain>.<account hash>`` after ``ACK`` and a trailing token (cheaper
    than ``Msg.metadata``, which builds several objects per message)."""
    tokens = reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5])
    if len(tokens) >= 11:
        return int(tokens[7])
    raise StoreError(f"JetStream delivered a message with an unexpected reply {reply[:200]!r}")
