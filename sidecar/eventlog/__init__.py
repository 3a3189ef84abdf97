"""The breaker event log service: append-only store, projections, audit, gRPC API.

Shares with the sidecar the protos (``sidecar.v1``), the hash chain (``sidecar.chain``) and a
few small helpers (``dial``, ``breaker_protos``, ``rpc_guard``, ``cli_types``), never its data
path (tests/unit/test_import_direction.py).
Where things live (each folder's ``__init__`` says more)::

    port/           the store port: records, errors and chain rules, limits, the abstract
                    EventStore, following, retention anchors, open_store(url)
    sqlite/         the embedded adapter: settings and URL, schema, writer thread, store
    nats/           the JetStream adapter: settings, subjects, codec, provisioning, append and
                    group commit, reads, checkpoints, retention, following, NatsEventStore
    projections/    read models: base, breakers and their views, endpoints, shedding, counts,
                    the runner (checkpoints, rebuild) and the server's follower
    retention/      the policy, the projection snapshots a cut log keeps, the server's job
    api/            the gRPC service, auth, admission, validation, subscription, status protos
    server.py       the assembly: ports, TLS, interceptors, health, metrics, lifecycle
    settings.py     every server setting and default
    metrics.py      /metrics: snapshots of the projections (metric_families.py: the families)
    event_protos.py payload kinds, decoding, envelope <-> record; enums.py: payload enums
    audit.py        verify: walk the whole log; heads.py: saved heads (verify --against)
    client.py       the client of a running log (``sidecar events query|tail``)
    cli*.py         the ``sidecar eventlog`` and ``sidecar events`` subcommands
    nats_auth.py    how the JetStream store proves who it is to NATS

Arrows point down the port: the API, projections, retention and the offline tools use an
``EventStore``; only ``port.opening`` names the adapters, and imports one when its URL asks.
"""
