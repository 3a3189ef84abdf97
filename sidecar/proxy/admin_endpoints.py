"""The endpoints half of the admin API: ``ListEndpoints`` answers and ``sidecar endpoints``.

``ListEndpoints`` shows each upstream's endpoints as its balancer sees them: active or
ejected (and until when), the latency estimate the balancer picks by, calls in flight, ejections
in a row, and the calls and failures each endpoint had since it joined. An unknown upstream
is NOT_FOUND listing the known ones.

``sidecar endpoints --admin HOST:PORT [--upstream NAME] [--output table|json]`` prints it
(the same dial and TLS options as ``sidecar breakers``).

Threading: the servicer reads balancer views on the proxy's event loop (O(endpoints) per
answer, never on the data path).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from google.protobuf.timestamp_pb2 import Timestamp

from sidecar.proxy.upstream import Upstream
from sidecar.text_table import render_table
from sidecar.v1 import admin_pb2

__all__ = ["endpoint_rows", "format_endpoints_table", "list_endpoints", "upstream_endpoints"]

UpstreamLookup = Callable[[], Mapping[str, Upstream]]

_STATE_NAMES: Final = {
    admin_pb2.ENDPOINT_STATE_ACTIVE: "active",
    admin_pb2.ENDPOINT_STATE_EJECTED: "ejected",
}


def _timestamp(unix_s: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(unix_s * 1e9))
    return stamp


def upstream_endpoints(upstream: Upstream) -> admin_pb2.UpstreamEndpoints:
    """One upstream's endpoints as the admin API shows them."""
    answer = admin_pb2.UpstreamEndpoints(
        upstream=upstream.name, balancer=upstream.balancer.settings.policy,
        source=upstream.source,
        refresh_failures=0 if upstream.discovery is None else upstream.discovery.refresh_failures)
    for view in upstream.balancer.views():
        info = answer.endpoints.add(
            address=view.address,
            state=(admin_pb2.ENDPOINT_STATE_EJECTED if view.ejected
                   else admin_pb2.ENDPOINT_STATE_ACTIVE),
            ewma_ms=view.ewma_ms, in_flight=view.in_flight,
            ejections_in_a_row=view.ejections_in_a_row, calls=view.calls,
            failures=view.failures)
        if view.ejected_until_wall is not None:
            info.ejected_until.CopyFrom(_timestamp(view.ejected_until_wall))
    return answer


def list_endpoints(upstreams: Mapping[str, Upstream],
                   name: str) -> admin_pb2.ListEndpointsResponse | str:
    """The answer to ``ListEndpoints``, or the NOT_FOUND message for an unknown ``name``."""
    if name and name not in upstreams:
        known = ", ".join(sorted(upstreams)) or "none"
        return f"no upstream named {name!r}; known upstreams: {known}"
    chosen = [upstreams[name]] if name else [upstreams[key] for key in sorted(upstreams)]
    return admin_pb2.ListEndpointsResponse(upstreams=[upstream_endpoints(u) for u in chosen])


def endpoint_rows(response: Any) -> list[dict[str, Any]]:
    """A ``ListEndpointsResponse`` as plain JSON-able rows, one per endpoint."""
    rows: list[dict[str, Any]] = []
    for upstream in response.upstreams:
        for info in upstream.endpoints:
            rows.append({
                "upstream": upstream.upstream,
                "balancer": upstream.balancer,
                "source": upstream.source,
                "endpoint": info.address,
                "state": _STATE_NAMES.get(info.state, f"unknown({info.state})"),
                "ewma_ms": round(info.ewma_ms, 3),
                "in_flight": info.in_flight,
                "ejected_until": (info.ejected_until.ToJsonString()
                                  if info.HasField("ejected_until") else None),
                "ejections_in_a_row": info.ejections_in_a_row,
                "calls": info.calls,
                "failures": info.failures,
                "refresh_failures": upstream.refresh_failures,
            })
        if not upstream.endpoints:
            rows.append({"upstream": upstream.upstream, "balancer": upstream.balancer,
                         "source": upstream.source, "endpoint": None, "state": "none",
                         "refresh_failures": upstream.refresh_failures})
    return rows


def format_endpoints_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width text table of :func:`endpoint_rows`."""
    header = ("UPSTREAM", "ENDPOINT", "STATE", "EWMA_MS", "IN_FLIGHT", "CALLS", "FAILURES",
              "EJECTIONS", "EJECTED_UNTIL")
    lines = [header]
    for row in rows:
        if row["endpoint"] is None:
            lines.append((row["upstream"], "(no endpoints)", "-", "-", "-", "-", "-", "-", "-"))
            continue
        lines.append((
            row["upstream"], row["endpoint"], row["state"], f"{row['ewma_ms']:.1f}",
            str(row["in_flight"]), str(row["calls"]), str(row["failures"]),
            str(row["ejections_in_a_row"]), row["ejected_until"] or "-",
        ))
    return render_table(header, lines[1:], "no upstreams")
