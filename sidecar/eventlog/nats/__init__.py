"""NATS JetStream adapter of the event store port: the log on a replicated JetStream stream.

``open_store("nats://h1:4222,h2:4222,h3:4222?replicas=3")`` gives a ``NatsEventStore``. The
event log server keeps nothing on local disk: the log is one JetStream stream (file storage,
``replicas`` copies kept by Raft), projection checkpoints live in a JetStream key-value bucket
beside it. Several event log servers can therefore serve the same cluster.

Where the adapter lives
-----------------------

- ``store``: ``NatsEventStore``, the facade joining the parts below over one shared state,
  and ``open_nats_store``.
- ``settings``: ``NatsSettings``, the URL parsing and every default.
- ``subjects`` (subject names, base64 tokens); ``codec`` (message bodies, header names,
  JetStream replies); ``errors`` (JetStream error codes: retry, plan again or give up).
- ``connection`` (the shared state, connect, close, head notices) and ``provisioning``
  (creating or checking the stream and the checkpoint bucket).
- ``lookups`` (single requests: leader gets, direct-get batches, stream info, fresh anchors)
  and ``reads`` (``read_stream``, ``read_all``, the scan, ``streams``).
- ``plans``, ``append`` and ``commit``: planning an append against the heads, group commit,
  publishing atomic batches.
- ``checkpoints`` (projection checkpoints, anchors, ``cut``) and ``retention`` (the anchor
  book, the bucket watcher, prefix purges).
- ``following``: ``follow`` on an ordered consumer, ``wait_for_append``.

How the port's promises map onto JetStream
-------------------------------------------

**One subject per (stream, version)**: the event at version ``v`` of stream ``svc/inst`` is
stored on ``<STREAM>.ev.<b64(svc)>.<b64(inst)>.<v>``. The JetStream stream allows one message
per subject and refuses a second one (``max_msgs_per_subject=1`` with
``discard=new, discard_new_per_subject``). So a version can never be written twice, whatever
the duplicate window, and whoever writes: idempotency holds *forever*, not for
``duplicate_window`` (JetStream's ``Nats-Msg-Id`` de-duplication is not relied on; the window
only sizes the server's de-duplication table). A retry of a stored event finds its slot taken
by the same ``event_id`` and returns the original position with ``duplicate=True``; a
different event there is a ``ConflictError`` naming both.

**The chain**: before a batch is sent, the adapter checks it against each stream's head (the
last message on ``<STREAM>.ev.<svc>.<inst>.*``, or the stream's retention anchor when that is
later): versions follow on, ``prev_hash`` is the head's
hash, ``hash`` is recomputed. The first event of every stream in the batch carries
``Nats-Expected-Last-Subject-Sequence`` (the head's stream sequence; 0 once cut whole) for
that wildcard subject,
so the server refuses the batch if any other writer (another event log replica) moved the head
meanwhile; the adapter then re-reads the head and decides again (duplicate, conflict or
retry).

**Atomic batches and group commit**: the new events of an append go out as one JetStream
atomic batch (ADR-50, ``allow_atomic``): all of its messages are stored or none. Appends that
arrive while earlier ones are in flight share the next batch (group commit, at most
``MAX_ATOMIC_BATCH_EVENTS`` messages, the server's limit): JetStream stages every atomic batch
in a temporary store before applying it, a fixed cost per batch that grouping spreads. A
single message is atomic by itself and skips the batch protocol. Appends to one stream from
one adapter are decided in arrival order (a per-stream lock), like the SQLite writer.

**Global position = stream sequence**, gap-free except where retention deleted: the stream
is created with ``deny_delete`` and without age, count or size limits, refused batches take
no sequence, and the only messages ever removed are the stream prefixes retention purges.
``read_all`` checks the sequences it gets: a gap at or below the highest retention anchor's
position is a cut (skipped), any other gap raises ``StoreError``. JetStream keeps the last
sequence when the newest messages are purged, so positions are never given again.

**Retention** (``cut``/``anchors``, ``sidecar.eventlog.nats.retention``): a stream's anchor
is written to the checkpoint bucket (one key per stream, compare-and-set) *before* its prefix
is purged, in one filtered purge request. Until the purge is done every read (``read_stream``,
``read_all``, ``follow``, the memory of recent appends) hides the events at or below the
anchor, appends there raise ``BeforeAnchorError``, and a cut again finishes a purge a crash
interrupted. The head of a stream cut whole is its anchor, so the next append chains on it.
Every adapter learns the anchors at connect and from a KV watcher (another replica's cut
within milliseconds); the head of a stream is read before its anchor, so an append never
judges against a stale genesis. Purging needs a stream created without ``deny_purge``
(``retention=1``; JetStream cannot lift ``deny_purge`` on an existing stream): on one that
denies purges ``cut`` raises ``StoreError`` saying so.

**Durability**: an append is answered after JetStream acknowledged it: on R1 the server has
written it to its file (the OS page cache: it survives a nats-server crash); on R3 a quorum
(2 of 3) of nodes has. Reaching the disk is governed by the servers' ``sync_interval``
(default every 2 minutes; ``always`` fsyncs each write): see README "Running at scale".

Known limit: ``event_id`` uniqueness is enforced per (stream, version) slot forever, but the
same ``event_id`` reused for a *different* slot is not detected (that would need a second
write per event; the producer never does it: an id is made once per event).

**Reads**: events this adapter committed itself are answered from memory (the last
``recent_events`` of them: the projection follower and live subscribers mostly read what was
just appended). Everything else comes from batched *direct gets* (``allow_direct``), without
headers when no subject filter applies (positions follow from the start; the end-of-batch
marker proves there was no gap); a service/instance filter is applied by the server as a
subject filter. Any replica may answer a direct get, so on R3 a follower can lag: a read that
ends before the head the leader reports is asked again.

**Waiting**: ``wait_for_append`` (the projection follower uses it) wakes on a notification
every adapter publishes after each commit (core NATS, ``<STREAM>.head``) and, while someone
waits, polls the leader's head every ``head_poll_interval_s`` (so appends made elsewhere, or a
lost notification, are seen too).

**Following** (the server's Subscribe): ``follow`` catches up with ``read_all`` pages, then
follows live from a JetStream *ordered consumer* (ephemeral, in memory, flow-controlled)
started at the catch-up's cursor: pushed in order with no polling, recreated by nats-py where
it left off when it misses heartbeats (e.g. its node died). Measured against the port's
default (``wait_for_append`` + ``read_all``, benchmarks/eventlog_subscribe.py): about half the
latency from append to delivery, but less live throughput per subscriber (every subscriber
gets and decodes its own copy over the network, where the default serves recent commits of
this adapter from memory): see benchmarks/RESULTS.md.

Threading: all methods are coroutines for one event loop; the connection is made lazily on
first use, inside that loop. Nothing blocks the loop.

Example::

    store = open_nats_store("nats://127.0.0.1:4222?stream=EVENTLOG&replicas=1")
    outcomes = await store.append(events)
    await store.close()
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
