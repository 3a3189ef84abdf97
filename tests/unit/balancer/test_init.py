"""The package's public surface is the agreed one: the proxy is wired against these names."""

from __future__ import annotations

import inspect
from pathlib import Path

import sidecar.balancer as balancer_pkg
from sidecar.balancer import Balancer, EndpointListener
from tests.support.purity import assert_stdlib_only

AGREED = {
    "Policy", "BalancerSettings", "OutlierSettings", "Ejection", "Return", "EndpointsChange",
    "EndpointListener", "EndpointView", "Endpoint", "Balancer",
}
ADDED = {"PeakEwma"}


def test_all_exports_exactly_the_agreed_names_plus_documented_additions() -> None:
    assert set(balancer_pkg.__all__) == AGREED | ADDED
    for name in balancer_pkg.__all__:
        assert getattr(balancer_pkg, name) is not None


def test_balancer_methods_keep_their_agreed_signatures() -> None:
    def params(name: str) -> list[str]:
        return list(inspect.signature(getattr(Balancer, name)).parameters)

    assert list(inspect.signature(Balancer).parameters) == [
        "upstream", "settings", "outlier", "clock", "wall_clock", "rng", "listeners",
    ]
    assert params("update_endpoints") == ["self", "targets", "source"]
    assert params("reconfigure") == ["self", "settings", "outlier"]
    assert params("pick") == ["self", "avoid"]
    assert params("start") == ["self", "endpoint"]
    assert params("finish") == ["self", "endpoint", "started", "failed", "latency_s"]
    assert params("cancel") == ["self", "endpoint"]
    for name in ("endpoints", "views", "active_count", "ejected_count"):
        assert params(name) == ["self"]
    assert params("add_listener") == ["self", "listener"]
    assert isinstance(Balancer.settings, property)
    assert isinstance(Balancer.outlier, property)


def test_listener_base_class_has_the_three_no_op_methods() -> None:
    listener = EndpointListener()
    for name in ("on_ejected", "on_returned", "on_endpoints_changed"):
        assert getattr(listener, name)(None) is None


def test_the_balancer_package_imports_only_the_standard_library_and_itself() -> None:
    assert_stdlib_only(balancer_pkg)


def test_every_module_stays_small() -> None:
    package_dir = Path(balancer_pkg.__file__).parent
    sources = sorted(package_dir.glob("*.py"))
    assert len(sources) > 1, f"no modules found in {package_dir}"
    for source in sources:
        assert len(source.read_text().splitlines()) <= 420, source.name
