"""Fixed-width text tables for the CLI (``sidecar breakers``, ``sidecar endpoints``)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["render_table"]


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> str:
    """``header`` and ``rows`` as left-aligned columns two spaces apart; ``empty`` when there
    are no rows.

    Example::

        render_table(("NAME", "STATE"), [("payments", "open")], "no breakers")
    """
    if not rows:
        return empty
    lines = [tuple(header), *(tuple(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
