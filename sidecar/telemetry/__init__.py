"""sidecar.telemetry: traces of every call and every breaker decision, Prometheus metrics,
structured JSON logs.

- :mod:`sidecar.telemetry.tracing`: call spans, transition spans, sampling, OTLP export.
- :mod:`sidecar.telemetry.metrics`: the contract metrics (DESIGN section 6) and ``/metrics``.
- :mod:`sidecar.telemetry.logging`: JSON lines with trace ids, transition and endpoint log
  lines.
- :mod:`sidecar.telemetry.endpoint_tracing` / :mod:`sidecar.telemetry.endpoint_metrics`: spans
  and metrics of endpoint ejections, returns and set changes (and per-endpoint request series).
- :mod:`sidecar.telemetry.plugin`: :class:`Telemetry`, all of it assembled as one proxy plugin.
"""

from sidecar.telemetry.plugin import Telemetry, tracing_disabled

__all__ = ["Telemetry", "tracing_disabled"]
