"""Fixtures for telemetry integration tests: a real upstream process and a real OTLP/gRPC
receiver, shared per module (tests keep apart by service name and trace id)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.otlp_receiver import OtlpReceiver
from tests.support.upstream import UpstreamProcess


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamProcess]:
    with UpstreamProcess(tmp_path_factory.mktemp("upstream")) as process:
        yield process


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as otlp:
        yield otlp
