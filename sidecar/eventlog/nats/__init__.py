"""NATS JetStream adapter of the event store port: the log on a replicated JetStream stream.

``open_store("nats://h1:4222,h2:4222,h3:4222?replicas=3")`` gives a ``NatsEventStore``: the log
is one JetStream stream (file storage, ``replicas`` copies kept by Raft), projection checkpoints
live in a key-value bucket beside it, so several event log servers can serve the same cluster.
``store`` holds the facade, ``settings`` the URL and its defaults; the other modules are its
parts (subjects, codec, connection and provisioning, lookups and reads, plans, append and
commit, checkpoints and retention, following). How each promise of the port maps onto
JetStream (one subject per version, the chain, atomic batches, positions, retention,
durability, reads, following) is told in docs/nats.md.
"""

from sidecar.eventlog.nats.codec import decode_event, encode_event
from sidecar.eventlog.nats.settings import DEFAULT_REPLICAS, DEFAULT_STREAM, NatsSettings
from sidecar.eventlog.nats.store import NatsEventStore, open_nats_store

__all__ = [
    "DEFAULT_REPLICAS",
    "DEFAULT_STREAM",
    "NatsEventStore",
    "NatsSettings",
    "decode_event",
    "encode_event",
    "open_nats_store",
]
