"""Config keys of an upstream's endpoints: exactly one source, discovery, balancer, ejection."""

from __future__ import annotations

import pytest

from sidecar.balancer import BalancerSettings, OutlierSettings
from sidecar.config import ConfigError, DnsDiscovery, FileDiscovery, parse_config


def _upstream(body: str) -> str:
    return f"service: checkout\nupstreams:\n  orders: {body}\n"


def _problems(body: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(_upstream(body))
    return info.value.problems


def test_an_address_is_one_static_endpoint() -> None:
    orders = parse_config(_upstream("{address: 127.0.0.1:1, routes: [/o/]}")).upstreams["orders"]
    assert (orders.source, orders.static_endpoints) == ("address", ("127.0.0.1:1",))


def test_an_endpoints_list_is_the_static_set() -> None:
    orders = parse_config(_upstream(
        "{endpoints: [127.0.0.1:1, '[::1]:2'], routes: [/o/]}")).upstreams["orders"]
    assert (orders.source, orders.static_endpoints) == ("endpoints", ("127.0.0.1:1", "[::1]:2"))


def test_dns_and_file_discovery_have_no_static_endpoints() -> None:
    config = parse_config(
        "service: s\nupstreams:\n"
        "  a: {discovery: {dns: 'orders.svc:50051', resolver: '127.0.0.1:53'}, routes: [/a/]}\n"
        "  b: {discovery: {file: /etc/orders.txt}, routes: [/b/]}\n")
    a, b = config.upstreams["a"], config.upstreams["b"]
    assert isinstance(a.discovery, DnsDiscovery) and a.discovery.refresh_ms == 5000.0
    assert a.discovery.timeout_ms == 2000.0 and a.source == "dns" and a.static_endpoints == ()
    assert isinstance(b.discovery, FileDiscovery) and b.discovery.poll_ms == 1000.0
    assert b.source == "file"


@pytest.mark.parametrize("body", [
    "{routes: [/o/]}",
    "{address: 127.0.0.1:1, endpoints: [127.0.0.1:2], routes: [/o/]}",
    "{address: 127.0.0.1:1, discovery: {file: x}, routes: [/o/]}",
])
def test_exactly_one_source_of_endpoints(body: str) -> None:
    (problem,) = _problems(body)
    assert problem.startswith("upstreams.orders: set exactly one of 'address'")


def test_a_null_source_counts_as_absent_so_a_dumped_config_loads_again() -> None:
    config = parse_config(_upstream("{endpoints: [127.0.0.1:1], routes: [/o/]}"))
    again = parse_config(_upstream(
        "{address: null, discovery: null, endpoints: [127.0.0.1:1], routes: [/o/]}"))
    assert again.upstreams == config.upstreams


@pytest.mark.parametrize(("body", "expected"), [
    ("{endpoints: [], routes: [/o/]}", "upstreams.orders.endpoints: "),
    ("{endpoints: [127.0.0.1:1, 127.0.0.1:1], routes: [/o/]}",
     "upstreams.orders.endpoints: '127.0.0.1:1' is listed twice"),
    ("{endpoints: [nohost], routes: [/o/]}", "upstreams.orders.endpoints[0]: must be HOST:PORT"),
    ("{discovery: {dns: x:1, file: y}, routes: [/o/]}",
     "upstreams.orders: discovery: set exactly one of 'dns'"),
    ("{discovery: {dns: x}, routes: [/o/]}", "upstreams.orders.discovery.dns: must be HOST:PORT"),
    ("{discovery: {dns: x:1, refresh_ms: 5}, routes: [/o/]}",
     "upstreams.orders.discovery.refresh_ms: "),
    ("{discovery: {file: y, refresh_ms: 500}, routes: [/o/]}",
     "upstreams.orders.discovery.refresh_ms: unknown key"),
    ("{discovery: 7, routes: [/o/]}", "upstreams.orders: discovery: must be a mapping"),
    ("{address: 127.0.0.1:1, routes: [/o/], balancer: random}", "upstreams.orders.balancer: "),
    ("{address: 127.0.0.1:1, routes: [/o/], outlier_detection: {max_ejection_percent: 101}}",
     "upstreams.orders.outlier_detection.max_ejection_percent: "),
    ("{address: 127.0.0.1:1, routes: [/o/], outlier_detection: {base_ejection_ms: 10, "
     "max_ejection_ms: 5}}", "upstreams.orders.outlier_detection: max_ejection_ms (5) must be >="),
    ("{address: 127.0.0.1:1, routes: [/o/], ewma_decay_ms: .nan}",
     "upstreams.orders.ewma_decay_ms"),
])
def test_a_bad_endpoint_key_names_its_path(body: str, expected: str) -> None:
    problems = _problems(body)
    assert any(problem.startswith(expected) for problem in problems), problems


def test_balancer_and_outlier_defaults_come_from_the_balancer_package() -> None:
    orders = parse_config(_upstream("{address: 127.0.0.1:1, routes: [/o/]}")).upstreams["orders"]
    assert orders.balancer_settings() == BalancerSettings()
    assert orders.outlier_detection.to_settings() == OutlierSettings()


def test_outlier_settings_carry_every_key() -> None:
    orders = parse_config(_upstream(
        "{address: 127.0.0.1:1, routes: [/o/], balancer: least_request, ewma_decay_ms: 500, "
        "outlier_detection: {enabled: false, consecutive_failures: null, failure_rate: 0.4, "
        "minimum_calls: 7, base_ejection_ms: 100, max_ejection_ms: 900, interval_ms: 250, "
        "max_ejection_percent: 34}}")).upstreams["orders"]
    assert orders.balancer_settings() == BalancerSettings(policy="least_request",
                                                          ewma_decay_ms=500.0)
    assert orders.outlier_detection.to_settings() == OutlierSettings(
        enabled=False, consecutive_failures=None, failure_rate=0.4, minimum_calls=7,
        base_ejection_ms=100.0, max_ejection_ms=900.0, interval_ms=250.0,
        max_ejection_percent=34.0)


def test_per_endpoint_metrics_are_off_by_default() -> None:
    config = parse_config(_upstream("{address: 127.0.0.1:1, routes: [/o/]}"))
    assert config.metrics.per_endpoint is False
    assert parse_config(_upstream("{address: 127.0.0.1:1, routes: [/o/]}")
                        + "metrics: {per_endpoint: true}\n").metrics.per_endpoint is True


@pytest.mark.parametrize("endpoint", ["a b:50051", "é.svc:50051", "host\t:1"])
def test_a_host_the_event_log_would_refuse_is_refused_here_first(endpoint: str) -> None:
    problems = _problems(f"{{endpoints: ['{endpoint}'], routes: [/o/]}}")
    assert problems[0].startswith("upstreams.orders.endpoints[0]: must be HOST:PORT"), problems
