"""Shared by the benchmarks: write one section of benchmarks/RESULTS.md, keep the others.

Each benchmark owns the part of RESULTS.md between ``<!-- BEGIN name -->`` and
``<!-- END name -->``; running one benchmark never touches another's numbers.
"""

from __future__ import annotations

from pathlib import Path

RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(path: Path, section: str, title: str, body: str) -> None:
    """Replace (or append) the ``section`` block of ``path`` with ``title`` and ``body``."""
    begin, end = f"<!-- BEGIN {section} -->", f"<!-- END {section} -->"
    block = f"{begin}\n## {title}\n\n{body.rstrip(chr(10))}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
