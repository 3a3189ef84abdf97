"""sidecar.telemetry: traces of every call and every breaker decision, Prometheus metrics,
structured JSON logs. Plugs into :mod:`sidecar.protection`'s hooks; never imports a transport.

- :mod:`sidecar.telemetry.tracing`: call spans, transition spans;
  :mod:`sidecar.telemetry.tracing_setup`: the provider, sampling, OTLP export.
- :mod:`sidecar.telemetry.metrics`: the contract metrics (docs/observability.md) and
  ``/metrics``.
- :mod:`sidecar.telemetry.logging`: JSON lines with trace ids, transition and endpoint log
  lines.
- :mod:`sidecar.telemetry.endpoint_tracing` / :mod:`sidecar.telemetry.endpoint_metrics`: spans
  and metrics of endpoint ejections, returns and set changes (and per-endpoint request series).
- :mod:`sidecar.telemetry.plugin`: :class:`Telemetry`, all of it assembled as one proxy plugin.
"""

from sidecar.telemetry.plugin import Telemetry, tracing_disabled

__all__ = ["Telemetry", "tracing_disabled"]
