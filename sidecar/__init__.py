"""Evergreen Sidecar: an observability-first service-mesh sidecar.

Layers, from pure logic up (an arrow is "imports"; nothing imports against one; the full table
is docs/design.md)::

    breaker, balancer, resilience     pure logic: no gRPC, no I/O, clocks injected
    config ──▶ breaker, balancer, resilience (their settings)
    protection ──▶ breaker, balancer, resilience, config
                                      the shared core: admission guard, breaker registry,
                                      route table, plugin hooks (what every way of calling uses)
    channels                          when to reopen a channel that stopped answering
    proxy ──▶ protection, channels    the gRPC transport: forwarding, retries, hedging, upstream
                                      channels, discovery, admin API, ``sidecar proxy``
    interceptor ──▶ protection        the in-process transport (library mode)
    telemetry ──▶ protection          tracing, metrics, logging: plugs into protection's hooks
    events ──▶ protection, channels   domain events, outbox, shipper: plugs into the hooks too
    eventlog                          the event log service: shares the protos and small helpers
                                      (chain, dial, breaker_protos, rpc_guard), never the data path
    v1                                generated protobuf code (``scripts/genproto.py``)

Telemetry, events, resilience, the interceptor and channels never import ``sidecar.proxy``; the
pure logic imports only itself; the event log never imports the data path
(tests/unit/test_import_direction.py checks all three); ``sidecar proxy`` (proxy/app.py) wires
telemetry and events in as plugins.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
