"""README.md and docs/*.md: the quick start, the links, and the configuration reference.

The configuration reference is what users copy, so each of its ```yaml blocks must be a file
``sidecar proxy`` accepts: parsed, expanded and validated by :func:`sidecar.config.parse_config`.
Its TLS keys name PEM files that exist only on a real machine (``/etc/sidecar/tls/...``); the
test points them at one throwaway PEM file so everything else is still validated. A block that
is only a fragment (not a whole file) is marked by a ``<!-- fragment -->`` line right before
it and is only parsed as YAML.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.config import parse_config

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 120
QUICK_START = ("make demo", "make test")
FRAGMENT = "<!-- fragment -->"
ENV = {"POD_NAME": "checkout-5d8f9c7b4-x2x9q"}

_FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.S | re.M)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _blocks(text: str, language: str) -> list[tuple[str, bool]]:
    """Each fenced block in ``language``, with whether a fragment marker precedes it."""
    found = []
    for match in _FENCE.finditer(text):
        if match.group(1) != language:
            continue
        before = text[: match.start()].rstrip().splitlines()
        found.append((match.group(2), bool(before) and before[-1].strip() == FRAGMENT))
    return found


def _prose(text: str) -> str:
    """The text outside fenced blocks and inline code, where links live."""
    return re.sub(r"`[^`\n]*`", "", _FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*?|_(?=\w)", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(h) for h in _HEADING.findall(_FENCE.sub("", page.read_text()))}


def _with_pem_files(node: Any, pem: str) -> Any:
    """A copy of the parsed YAML with every ``*_file`` value pointing at ``pem``."""
    if isinstance(node, dict):
        return {key: pem if isinstance(key, str) and key.endswith("_file") and value
                else _with_pem_files(value, pem) for key, value in node.items()}
    if isinstance(node, list):
        return [_with_pem_files(item, pem) for item in node]
    return node


def test_readme_is_a_quick_start() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"
    commands = [line.strip() for block, _ in _blocks(README.read_text(), "sh")
                for line in block.splitlines()]
    for command in QUICK_START:
        assert command in commands, f"README.md's quick start lost `{command}`"


def test_ci_runs_the_readme_test_command() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for command in QUICK_START:
        target = command.split()[1]
        assert re.search(rf"^{target}:", makefile, re.M), f"no Makefile target for {command}"
    assert re.search(r"^make test\b", (ROOT / ".ci" / "run").read_text(), re.M)


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in _LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_docs_index_lists_every_page() -> None:
    index = (DOCS / "README.md").read_text()
    listed = set(_LINK.findall(index))
    missing = [p.name for p in DOCS.glob("*.md") if p.name != "README.md" and p.name not in listed]
    assert not missing, f"docs/README.md does not list {missing}"


def _configuration_blocks() -> list[tuple[str, bool]]:
    return _blocks((DOCS / "configuration.md").read_text(), "yaml")


def test_configuration_reference_has_yaml_blocks() -> None:
    blocks = _configuration_blocks()
    assert blocks, "docs/configuration.md has no ```yaml block"
    assert sum(fragment for _, fragment in blocks) <= 2, "keep fragment exceptions few"


@pytest.mark.parametrize("block", [b for b, _ in _configuration_blocks()] + [
    b for b, _ in _blocks(README.read_text(), "yaml")])
def test_yaml_blocks_parse(block: str) -> None:
    yaml.safe_load(block)


@pytest.mark.parametrize("block", [b for b, fragment in _configuration_blocks() if not fragment]
                         + [b for b, _ in _blocks(README.read_text(), "yaml")])
def test_yaml_blocks_are_valid_configs(block: str, tmp_path: Path) -> None:
    pem = tmp_path / "any.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n")
    raw = _with_pem_files(yaml.safe_load(block), str(pem))
    config = parse_config(yaml.safe_dump(raw), "docs/configuration.md", env=ENV)
    assert config.service
