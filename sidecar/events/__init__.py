"""sidecar.events: breaker changes as domain events, a durable outbox and an idempotent shipper.

One module per job (import what you need; this package imports nothing, so the config module
can read the defaults cheaply)::

    settings.py   EventsSettings: every default of the pipeline, validated once
    producer.py   EventRecorder (a BreakerListener) and EventQueue (bounded, never blocks)
    outbox.py     Outbox (SQLite, WAL; numbers and chains events in ONE place) and OutboxWriter
    shipper.py    Shipper (batch processor: what to ship and when, conflicts, drain on stop)
    backoff.py    Backoff and the shipper's own breaker settings
    rebase.py     StreamHeads: head lookup and renumbering after a conflict or reconnect
    exporter.py   GrpcEventExporter (encodes and sends EventLog.Append / ReadStream; a new
                  channel after repeated timeouts, sidecar.channels.TimeoutStreak)
    metrics.py    EventsCollector: the pipeline's Prometheus metrics, computed at scrape time
    plugin.py     EventPipeline and the ``sidecar proxy`` plugin factory

Threading: only EventRecorder/EventQueue.offer run on the data path (never blocking); the
outbox writer and the shipper each run in their own thread.
"""
