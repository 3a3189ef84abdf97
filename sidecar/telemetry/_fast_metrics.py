"""prometheus_client's counter and histogram children, updated without the per-call checks of
their public methods (the data path counts every call, so each check costs on every call).

``Counter.inc`` and ``Histogram.observe`` check, on every call, that the child has its label
values and that the amount is not negative, then scan the buckets one by one. For a child the
sidecar bound once (labels known, amount 1 or a duration) the checks cannot fail, and the
bucket of a duration is a binary search. What is updated is what the public methods update: a
counter's value; a histogram's sum and the first bucket whose upper bound is >= the amount.

Both fall back to the public methods when the child does not look like prometheus_client's
(another version's internals): same series, only slower. Exemplars always go through the
public ``observe``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Any, Protocol

from prometheus_client import Counter, Histogram

__all__ = ["Incrementable", "LatencyBuckets", "counter_value"]


class Incrementable(Protocol):
    def inc(self, amount: float) -> None: ...


def counter_value(child: Counter) -> Incrementable:
    """What ``child.inc(1)`` increments, to call ``inc(1)`` on (the child itself when its
    value is not reachable)."""
    value: Any = getattr(child, "_value", None)
    return value if callable(getattr(value, "inc", None)) else child


class LatencyBuckets:
    """One histogram child's sum and buckets: :meth:`observe` is ``child.observe(amount)``
    without exemplar."""

    __slots__ = ("_bounds", "_buckets", "_child", "_sum")

    def __init__(self, child: Histogram) -> None:
        self._child = child
        bounds: Sequence[float] | None = getattr(child, "_upper_bounds", None)
        buckets: Sequence[Any] | None = getattr(child, "_buckets", None)
        total: Any = getattr(child, "_sum", None)
        usable = (bounds is not None and buckets is not None and total is not None
                  and len(bounds) == len(buckets) and list(bounds) == sorted(bounds)
                  and bounds[-1] == float("inf"))
        self._bounds = tuple(bounds) if usable and bounds is not None else ()
        self._buckets = tuple(buckets) if usable and buckets is not None else ()
        self._sum = total if usable else None

    def observe(self, amount: float) -> None:
        total = self._sum
        if total is None or amount != amount:  # not bound, or NaN (in no bucket): the library
            self._child.observe(amount)
            return
        total.inc(amount)
        self._buckets[bisect_left(self._bounds, amount)].inc(1)
