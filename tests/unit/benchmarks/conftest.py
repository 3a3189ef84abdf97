"""The benchmarks import each other as top-level modules (``import _harness``): put their
folder on sys.path, as running ``python benchmarks/X.py`` does."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))
