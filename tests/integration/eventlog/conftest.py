"""Fixtures for the event log's integration tests: real ``sidecar eventlog serve`` processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.eventlog._server import EventLogProcess


@pytest.fixture(scope="module")
def eventlog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EventLogProcess]:
    """One server for the module; tests keep apart by service name (or start their own)."""
    with EventLogProcess(tmp_path_factory.mktemp("eventlog")) as server:
        yield server
