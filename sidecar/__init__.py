"""Evergreen Sidecar: an observability-first service-mesh sidecar.

Packages (arrows point one way, see DESIGN.md section 2):

- ``sidecar.breaker``: the adaptive circuit breaker, pure logic, clock injected.
- ``sidecar.proxy``: the grpc.aio pass-through proxy and admin API.
- ``sidecar.telemetry``: tracing, metrics, logging.
- ``sidecar.events``: domain events, outbox, shipper.
- ``sidecar.eventlog``: the event log service (shares only ``sidecar.v1`` protos).
- ``sidecar.v1``: generated protobuf code (``scripts/genproto.py``).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
