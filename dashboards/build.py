"""Build the Grafana dashboards from code: ``python dashboards/build.py [--check]``.

The dashboards are written with Grafana Labs' dashboards-as-code SDK
(``grafana-foundation-sdk``) and committed as JSON next to this file, where Grafana's file
provisioning (``dashboards/provisioning/``) picks them up. Edit the code, never the JSON:
``overview.py`` and ``event_log.py`` hold one dashboard each, ``panels.py`` the panel shapes
they share, ``names.py`` the metric names and selectors. ``tests/unit/dashboards`` fails when
the committed JSON differs from what this builds, and ``tests/integration/dashboards`` runs
every query against a real Prometheus that scrapes a real sidecar and event log, so a panel
that would stay empty fails CI.

Label conventions (set by ``deploy/prometheus.yml``): every sidecar target carries a
``service`` label (the pod's ``app.kubernetes.io/name``) and ``instance`` is the pod name,
which is also the sidecar's default ``instance`` in its events. The event log is scraped with
``honor_labels: true`` so the ``service``/``instance``/``upstream`` labels of its projections
are kept as exported.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

if __package__ in (None, ""):  # run as a script (``python dashboards/build.py``): find the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from dashboards.event_log import breaker_event_log
from dashboards.overview import sidecar_overview

HERE: Final = Path(__file__).resolve().parent

DASHBOARDS: Final[dict[str, Callable[[], dash.Dashboard]]] = {
    "sidecar-overview.json": sidecar_overview,
    "breaker-event-log.json": breaker_event_log,
}
"""Output file name (in ``dashboards/``) → the function that builds it."""


def render(builder: dash.Dashboard) -> str:
    """The dashboard as Grafana JSON: stable key order, two-space indent, final newline.

    Panels (rows included) get ids 1, 2, ... in layout order: Grafana needs them unique
    within a dashboard and the SDK leaves them unset.
    """
    built = builder.build()
    for number, panel in enumerate(built.panels or [], start=1):
        panel.id_val = number
    return JSONEncoder(sort_keys=True, indent=2, ensure_ascii=False).encode(built) + "\n"


def stale_files(directory: Path = HERE) -> list[str]:
    """Names of the committed dashboards that differ from what this file builds."""
    stale = []
    for name, build in DASHBOARDS.items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != render(build()):
            stale.append(name)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when a committed dashboard is stale")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: here)")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.out)
        for name in stale:
            print(f"stale: dashboards/{name} (run: python dashboards/build.py)", file=sys.stderr)
        return 1 if stale else 0
    for name, build in DASHBOARDS.items():
        (args.out / name).write_text(render(build()), encoding="utf-8")
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
