"""Route matching: the longest method-path prefix wins."""

from __future__ import annotations

from sidecar.protection.routes import MAX_CACHED_METHODS, RouteTable


def test_longest_prefix_wins_regardless_of_declaration_order() -> None:
    table = RouteTable({"/pay.": "broad", "/pay.v1.Refunds/": "refunds", "/pay.v1.": "v1"})
    assert table.match("/pay.v1.Refunds/Create") == "refunds"
    assert table.match("/pay.v1.Charges/Create") == "v1"
    assert table.match("/pay.v2.Charges/Create") == "broad"


def test_unmatched_method_has_no_route() -> None:
    table = RouteTable({"/pay.": "pay"})
    assert table.match("/ship.v1.Ship/Go") is None
    assert table.match("/pa") is None


def test_memo_stays_bounded_and_answers_stay_right() -> None:
    table = RouteTable({"/a.": 1})
    for i in range(MAX_CACHED_METHODS + 10):
        assert table.match(f"/a.S/M{i}") == 1
    assert len(table._memo) <= MAX_CACHED_METHODS
    assert table.match("/a.S/M0") == 1
