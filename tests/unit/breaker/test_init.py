"""The package's public surface is the agreed one (notes/BREAKER_API.md): others code against it."""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

import sidecar.breaker as breaker_pkg
from sidecar.breaker import CircuitBreaker

AGREED = {
    "State", "Mode", "BreakerSettings", "WindowSnapshot", "Transition", "ModeChange",
    "BreakerListener", "CircuitBreaker", "Permit", "BreakerView",
}
ADDED = {"CountWindow", "TimeWindow", "SlidingWindow", "IllegalTransitionError"}


def test_all_exports_exactly_the_agreed_names_plus_documented_additions() -> None:
    assert set(breaker_pkg.__all__) == AGREED | ADDED
    for name in breaker_pkg.__all__:
        assert getattr(breaker_pkg, name) is not None


def test_circuit_breaker_methods_keep_their_agreed_signatures() -> None:
    params = {
        name: list(inspect.signature(getattr(CircuitBreaker, name)).parameters)
        for name in ("try_acquire", "record", "release", "retry_after_s", "set_mode",
                     "update_settings", "add_listener", "view")
    }
    assert params["record"] == ["self", "permit", "duration_s", "failed"]
    assert params["set_mode"] == ["self", "mode", "source"]
    assert list(inspect.signature(CircuitBreaker).parameters) == [
        "name", "settings", "clock", "wall_clock", "rng",
    ]


def test_the_breaker_package_imports_only_the_standard_library_and_itself() -> None:
    package_dir = Path(breaker_pkg.__file__).parent
    for source in package_dir.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            modules: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            for module in modules:
                own = module == "sidecar.breaker" or module.startswith("sidecar.breaker.")
                stdlib = module.split(".")[0] in sys.stdlib_module_names | {"__future__"}
                assert own or stdlib, f"{source.name} imports {module}"
