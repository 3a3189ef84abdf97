"""The admin API's wire form of a breaker, and how `sidecar breakers` prints it."""

from __future__ import annotations

from sidecar.breaker import BreakerSettings, BreakerView
from sidecar.protection import BreakerRegistry, Bulkhead
from sidecar.proxy.admin import breaker_info
from sidecar.proxy.cli import breaker_dict, format_table


def _view() -> BreakerView:
    return BreakerRegistry().configure("payments", BreakerSettings()).view()


def test_a_breaker_carries_its_upstreams_in_flight_limit_and_overflows() -> None:
    limit = Bulkhead(5)
    assert limit.try_enter() and limit.try_enter()
    limit.limit = 2
    assert not limit.try_enter()
    row = breaker_dict(breaker_info(_view(), limit))
    assert row["concurrency"] == {"in_flight": 2, "max_concurrent_requests": 2, "overflows": 1,
                                  "algorithm": "fixed", "limit": 2, "shed": 0,
                                  "shedding": False}
    assert row["retry_budget"] is None
    header, line = format_table([row]).splitlines()
    cells = dict(zip(header.split()[:9], line.split()[:9], strict=True))
    assert (cells["IN_FLIGHT"], cells["OVERFLOWS"]) == ("2/2", "1")


def test_without_a_known_limit_the_fields_stay_unset_and_print_as_dashes() -> None:
    info = breaker_info(_view())
    assert not info.HasField("concurrency")
    row = breaker_dict(info)
    assert row["concurrency"] is None
    header, line = format_table([row]).splitlines()
    cells = dict(zip(header.split()[:9], line.split()[:9], strict=True))
    assert (cells["IN_FLIGHT"], cells["OVERFLOWS"]) == ("-", "-")
