"""Fixtures for the proxy's integration tests: a real upstream process shared per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.upstream import UpstreamProcess


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamProcess]:
    """One upstream server process for the module; tests keep apart by service name."""
    with UpstreamProcess(tmp_path_factory.mktemp("upstream")) as process:
        yield process
