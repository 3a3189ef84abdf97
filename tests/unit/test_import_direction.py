"""The arrows of docs/design.md: the shared core and what plugs into it never import the proxy.

Read from the source with :mod:`ast` (every ``import`` and ``from ... import``, also inside
functions and ``TYPE_CHECKING`` blocks), so the rule holds for type-only imports too: a plugin
that needs a proxy type should ask for a Protocol in :mod:`sidecar.protection.hooks` instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "sidecar"
CORE = ("protection", "telemetry", "events", "resilience", "interceptor", "channels.py")
FORBIDDEN = "sidecar.proxy"


def _sources() -> list[Path]:
    files: list[Path] = []
    for name in CORE:
        path = ROOT / name
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files


def _imported(tree: ast.AST, package: str) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # ``from sidecar import proxy`` names the package in the alias
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def _package_of(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts if path.name == "__init__.py" else parts[:-1]).removesuffix(
        ".__init__")


def test_the_core_packages_exist() -> None:
    for name in CORE:
        assert (ROOT / name).exists(), name
    assert len(_sources()) > len(CORE)


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_never_imports_the_proxy(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = [f"{path.name}:{line}: {module}" for line, module in _imported(tree, _package_of(path))
           if module == FORBIDDEN or module.startswith(FORBIDDEN + ".")]
    assert not bad, f"imports the proxy (see docs/design.md, the arrows): {bad}"


PURE = ("breaker", "balancer", "resilience")
DATA_PATH = ("sidecar.proxy", "sidecar.protection", "sidecar.interceptor", "sidecar.telemetry",
             "sidecar.events")


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _sidecar_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [(line, module) for line, module in _imported(tree, _package_of(path))
            if module.startswith("sidecar.")]


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == name or module.startswith(name + ".") for name in packages)


@pytest.mark.parametrize("path", [p for name in PURE for p in _files(name)],
                         ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_pure_logic_imports_only_pure_logic(path: Path) -> None:
    """breaker, balancer and resilience run on an injected clock with no I/O: they may use each
    other, never config, the transports or the plugins."""
    allowed = tuple(f"sidecar.{name}" for name in PURE)
    bad = [f"{path.name}:{line}: {module}" for line, module in _sidecar_imports(path)
           if not _within(module, allowed)]
    assert not bad, f"pure logic imports outside breaker/balancer/resilience: {bad}"


@pytest.mark.parametrize("path", _files("eventlog"), ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_the_event_log_never_imports_the_data_path(path: Path) -> None:
    """The event log is its own service: it shares the wire protos and small helpers with the
    sidecar, never the proxy, the shared core, the interceptor, telemetry or the event pipeline."""
    bad = [f"{path.name}:{line}: {module}" for line, module in _sidecar_imports(path)
           if _within(module, DATA_PATH)]
    assert not bad, f"the event log imports the sidecar's data path: {bad}"
