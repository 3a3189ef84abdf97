"""Checks that a pure-logic package (breaker, balancer, ...) imports only the standard library
and itself: no I/O framework, nothing from the proxy."""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from types import ModuleType


def assert_stdlib_only(package: ModuleType) -> None:
    """Fail naming the first module of ``package`` that imports anything else."""
    assert package.__file__ is not None
    name = package.__name__
    sources = sorted(Path(package.__file__).parent.glob("*.py"))
    assert len(sources) > 1, f"no modules found for {name}"
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text())):
            modules: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            for module in modules:
                own = module == name or module.startswith(name + ".")
                stdlib = module.split(".")[0] in sys.stdlib_module_names | {"__future__"}
                assert own or stdlib, f"{source.name} imports {module}"
