"""Read every query out of a Grafana dashboard JSON and make it runnable on Prometheus.

Used by the tests that prove the dashboards: a panel whose query returns nothing against a
Prometheus scraping the real services is a broken panel.

Grafana expands variables before it sends a query; :func:`expand` does the same with concrete
values, the way Grafana would for a given time range and step:

- ``$__interval`` is the step, ``$__rate_interval`` is ``max(step + scrape, 4 * scrape)``,
  ``$__range`` / ``$__range_s`` the time range (Grafana's own definitions);
- dashboard variables (``$name`` or ``${name}``) are replaced by the given values.

A variable left over is an error (a typo in a dashboard must not turn into an empty panel).

Example::

    dashboard = json.loads(Path("dashboards/sidecar-overview.json").read_text())
    for query in dashboard_queries(dashboard):
        promql = expand(query.expr, {"service": "shop"}, step_s=1, scrape_s=1, range_s=60)
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

LABEL_VALUES: Final = re.compile(r"^label_values\((?:(?P<match>.+),\s*)?(?P<label>\w+)\)$")
"""Grafana's Prometheus variable query ``label_values(selector, label)``."""

_VARIABLE: Final = re.compile(r"\$(?:\{(?P<braced>\w+)\}|(?P<plain>\w+))")

QueryKind = Literal["panel", "annotation", "variable"]


@dataclass(frozen=True, slots=True)
class DashboardQuery:
    """One query of a dashboard: a panel target, an annotation or a variable's query."""

    dashboard: str
    kind: QueryKind
    title: str
    ref_id: str
    expr: str
    instant: bool = False

    @property
    def name(self) -> str:
        return f"{self.dashboard} / {self.kind} {self.title!r} {self.ref_id}".rstrip()


def panels(dashboard: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every panel that is not a row, including panels inside collapsed rows."""
    for panel in dashboard.get("panels") or ():
        if panel.get("type") == "row":
            yield from panel.get("panels") or ()
        else:
            yield panel


def dashboard_queries(dashboard: Mapping[str, Any]) -> list[DashboardQuery]:
    """Every query Grafana would send for this dashboard, in display order."""
    uid = str(dashboard.get("uid", "?"))
    found: list[DashboardQuery] = []
    for variable in (dashboard.get("templating") or {}).get("list") or ():
        if variable.get("type") == "query":
            query = variable.get("query")
            text = query.get("query", "") if isinstance(query, dict) else str(query)
            found.append(DashboardQuery(uid, "variable", str(variable["name"]), "", text))
    for annotation in (dashboard.get("annotations") or {}).get("list") or ():
        if annotation.get("expr"):
            found.append(DashboardQuery(uid, "annotation", str(annotation["name"]), "",
                                        str(annotation["expr"])))
    for panel in panels(dashboard):
        for target in panel.get("targets") or ():
            found.append(DashboardQuery(
                uid, "panel", str(panel.get("title", "")), str(target.get("refId", "")),
                str(target.get("expr", "")), instant=bool(target.get("instant")),
            ))
    return found


def rate_interval_s(step_s: float, scrape_s: float) -> float:
    """Grafana's ``$__rate_interval``: ``max($__interval + scrape interval, 4 * scrape)``."""
    return max(step_s + scrape_s, 4 * scrape_s)


def _duration(seconds: float) -> str:
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def expand(expr: str, variables: Mapping[str, str], *, step_s: float, scrape_s: float,
           range_s: float) -> str:
    """``expr`` with Grafana's built-in and the dashboard's variables replaced.

    Raises ``KeyError`` naming a variable that has no value.
    """
    builtins = {
        "__interval": _duration(step_s),
        "__interval_ms": str(round(step_s * 1000)),
        "__rate_interval": _duration(rate_interval_s(step_s, scrape_s)),
        "__range": _duration(range_s),
        "__range_s": str(round(range_s)),
        "__range_ms": str(round(range_s * 1000)),
    }

    def value(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        if name in builtins:
            return builtins[name]
        if name in variables:
            return variables[name]
        raise KeyError(f"variable ${name} has no value (in {expr!r})")

    return _VARIABLE.sub(value, expr)
