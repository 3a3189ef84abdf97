"""``NatsEventStore``: the JetStream adapter of the event store port, put together.

The parts share one state (``connection.JetStreamConnection``); each adds the port's methods
of one job. The package docstring has the design; this module only joins the parts.
"""

from __future__ import annotations

from sidecar.eventlog.nats.append import Appends
from sidecar.eventlog.nats.checkpoints import Checkpoints
from sidecar.eventlog.nats.following import Following
from sidecar.eventlog.nats.reads import Reads
from sidecar.eventlog.nats.settings import NatsSettings
from sidecar.eventlog.nats_auth import NatsAuth


class NatsEventStore(Appends, Reads, Checkpoints, Following):
    """The event store on a JetStream stream (see the package docstring for the design).

    All methods are coroutines for one event loop; the connection is made lazily on first
    use, inside that loop.
    """


def open_nats_store(url: str, auth: NatsAuth | None = None) -> NatsEventStore:
    """The JetStream store for ``url`` (see ``NatsSettings.from_url``); connects on first use."""
    return NatsEventStore(NatsSettings.from_url(url, auth))
