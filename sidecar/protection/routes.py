"""The route table: which target a method path goes to, by longest matching prefix.

Shared by the proxy (its routes lead to upstreams) and the in-process interceptors (theirs lead
to guards): both route calls by the same ``routes:`` rules (docs/configuration.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Generic, TypeVar

__all__ = ["MAX_CACHED_METHODS", "RouteTable"]

MAX_CACHED_METHODS: Final = 4096
"""Distinct method paths whose route match is remembered; past it the memo starts over
(bounded: method paths come from callers)."""

T = TypeVar("T")


class RouteTable(Generic[T]):
    """Maps a method path (``/pkg.Service/Method``) to the target of its longest matching
    route prefix. Immutable once built (a reload builds a new table); lookups are memoised.

    Example::

        table = RouteTable({"/payments.v1.": "payments", "/payments.v1.Refunds/": "refunds"})
        table.match("/payments.v1.Refunds/Create")   # "refunds"
        table.match("/other.Svc/M")                   # None
    """

    __slots__ = ("_memo", "_routes")

    def __init__(self, routes: Mapping[str, T]) -> None:
        self._routes: tuple[tuple[str, T], ...] = tuple(
            sorted(routes.items(), key=lambda item: len(item[0]), reverse=True)
        )
        self._memo: dict[str, T | None] = {}

    def match(self, method: str) -> T | None:
        try:
            return self._memo[method]
        except KeyError:
            pass
        found: T | None = None
        for prefix, target in self._routes:
            if method.startswith(prefix):
                found = target
                break
        if len(self._memo) >= MAX_CACHED_METHODS:
            self._memo.clear()
        self._memo[method] = found
        return found
