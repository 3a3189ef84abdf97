"""The demo's two resilience stories, fed from every frame: the sick ``orders`` replica masked
by retries, and ``catalog``'s surge shed by the adaptive limit.

:class:`Stories` keeps the watches of :mod:`sidecar.demo._resilience_view` and
:mod:`sidecar.demo._shedding_view` together, so the demo's loop hands it the admin replies
and the load generator's totals, prints what it returns, and asks it for the summary.

Pure code, called from the demo's event loop only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from sidecar.demo._resilience_view import MaskLine, MaskWatch, ResilienceRow, ResilienceWatch
from sidecar.demo._shedding_view import SheddingLine, SheddingWatch

__all__ = ["CATALOG", "ORDERS", "Stories"]

ORDERS: Final = "orders"
CATALOG: Final = "catalog"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class Stories:
    """``sick_address`` / ``sick_name``: the orders replica that sickens; ``catalog_phase_of``
    names catalog's load phase at an elapsed time (for the shedding lines)."""

    def __init__(self, sick_address: str, sick_name: str,
                 catalog_phase_of: Callable[[float], str], started_at_wall: float, *,
                 not_before_wall: float | None = None) -> None:
        self._sick_address = sick_address
        self.resilience = ResilienceWatch()
        self.mask = MaskWatch(ORDERS, sick_name)
        self.shedding = SheddingWatch(catalog_phase_of, started_at_wall,
                                      not_before_wall=not_before_wall)
        self.rows: list[ResilienceRow] = []
        self._sick_failures = 0

    def breakers(self, response: Any, monotonic_s: float) -> list[ResilienceRow]:
        """Feed a ``ListBreakersResponse``; the rows to show."""
        self.rows = self.resilience.observe(response, monotonic_s)
        return self.rows

    def endpoints(self, response: Any) -> None:
        """Feed a ``ListEndpointsResponse`` of ``orders``: the sick replica's failures."""
        for upstream in response.upstreams:
            for info in upstream.endpoints:
                if upstream.upstream == ORDERS and info.address == self._sick_address:
                    self._sick_failures = int(info.failures)

    def frame(self, elapsed_s: float, orders_phase: str,
              load_totals: Mapping[str, Mapping[str, int]]) -> list[MaskLine | SheddingLine]:
        """The lines due at this frame."""
        orders = self.resilience.last.get(ORDERS)
        retries = orders.retries if orders is not None and orders.retries is not None else 0
        budget = orders.budget_available if orders is not None and orders.retries is not None \
            else None
        failed = load_totals.get(ORDERS, {}).get("failed", 0)
        lines: list[MaskLine | SheddingLine] = list(self.mask.observe(
            elapsed_s, orders_phase, self._sick_failures, retries, failed, budget))
        self.shedding.observe(self.rows, elapsed_s)
        lines.extend(self.shedding.due(elapsed_s))
        return sorted(lines, key=lambda line: line.elapsed_s)

    def flush(self) -> list[SheddingLine]:
        return self.shedding.flush()

    def summary(self, load_totals: Mapping[str, Mapping[str, int]]) -> list[str]:
        """The summary's lines about retries and shedding."""
        out = []
        orders = self.resilience.last.get(ORDERS)
        if orders is not None and orders.retries is not None:
            calls = load_totals.get(ORDERS, {})
            total = sum(calls.values())
            out.append(f"  {ORDERS:<10} retried {_plural(orders.retries, 'call')} "
                       f"(budget refused {orders.budget_exhausted}); callers' failures "
                       f"{calls.get('failed', 0)} of {total} calls")
        catalog = self.resilience.last.get(CATALOG)
        if catalog is not None and catalog.adaptive:
            periods = [p for p in self.shedding.periods() if p.upstream == CATALOG]
            spans = ", ".join(
                f"{p.started_s:.1f}s-" + (f"{p.stopped_s:.1f}s" if p.stopped_s is not None
                                          else "end") + (f" ({p.shed} shed)" if p.shed else "")
                for p in periods)
            overflow = load_totals.get(CATALOG, {}).get("overflow", 0)
            out.append(f"  {CATALOG:<10} shed {_plural(catalog.shed, 'call')} "
                       f"(callers saw {overflow} overflow) in "
                       f"{_plural(len(periods), 'shedding period')}"
                       + (f": {spans}" if spans else "")
                       + f"; limit now {catalog.limit} ({catalog.algorithm})")
        return out
