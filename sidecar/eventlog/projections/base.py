"""The base of every projection: a named, pure fold of stored events into small entries.

``apply(state, event, payload)`` changes ``state`` for one stored event (``payload`` is the
event's decoded message, decoded once by the runner for all projections) and does no I/O.
States serialize to JSON with sorted keys (``dump``/``load``), so a rebuilt state and an
incrementally kept one can be compared byte for byte, and a checkpoint can hold any of them.
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Generic, TypeVar

from sidecar.eventlog.event_protos import Payload
from sidecar.eventlog.port import StoredEvent

__all__ = ["STATE_FORMAT", "CountEntry", "Key", "Projection"]

STATE_FORMAT: Final = 1
"""Version of the serialized state layout; a checkpoint of another format is rebuilt."""


Key = tuple[str, ...]
E = TypeVar("E")


class Projection(ABC, Generic[E]):
    """A named fold over the log into ``dict[Key, E]`` where ``E`` is a small dataclass."""

    name: ClassVar[str]
    entry_type: ClassVar[type[Any]]

    def initial(self) -> dict[Key, E]:
        return {}

    @abstractmethod
    def apply(self, state: dict[Key, E], event: StoredEvent, payload: Payload | None) -> None:
        """Fold one event into ``state`` (pure: no I/O, no clock)."""

    def dump(self, state: dict[Key, E]) -> bytes:
        """Canonical JSON (sorted keys, sorted entries) of ``state``."""
        entries = [[list(key), _fields(state[key])] for key in sorted(state)]
        document = {"format": STATE_FORMAT, "projection": self.name, "entries": entries}
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()

    def load(self, data: bytes) -> dict[Key, E]:
        """The state ``dump`` wrote; ``ValueError`` for another projection or format."""
        document = json.loads(data)
        if document.get("format") != STATE_FORMAT or document.get("projection") != self.name:
            raise ValueError(
                f"checkpoint of {self.name}: format {document.get('format')!r} of "
                f"{document.get('projection')!r} is not format {STATE_FORMAT} of {self.name!r}"
            )
        return {tuple(key): self.entry_type(**fields) for key, fields in document["entries"]}


def _fields(entry: Any) -> dict[str, Any]:
    fields: dict[str, Any] = dataclasses.asdict(entry)
    return fields


@dataclass(slots=True)
class CountEntry:
    """A counter: the entry of every projection that only counts."""

    count: int = 0
