"""Retention through ``sidecar eventlog serve`` on JetStream R3: the same scenario as on SQLite
(tests/integration/eventlog/test_retention.py), two sidecars under traffic, the server cutting
by count every 200 ms on a stream created with ``retention=1``; and the one-line refusal of
``--retain-*`` on a JetStream URL without it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.eventlog.test_retention import (
    COUNT_RETENTION_ARGS,
    count_retention_scenario,
)
from tests.integration.nats.helpers import NatsEventLogProcess
from tests.support.nats import NatsCluster, unique_stream_name
from tests.support.procs import SIDECAR_BIN

pytestmark = pytest.mark.integration


def test_count_retention_on_jetstream_r3_bounds_the_log_and_loses_nothing(
        tmp_path: Path, nats_trio: NatsCluster) -> None:
    url = nats_trio.store_url(stream=unique_stream_name(), replicas=3, retention=1)
    with NatsEventLogProcess(tmp_path, url, *COUNT_RETENTION_ARGS) as server:
        count_retention_scenario(tmp_path, server, url, "jetstream")


def test_retention_flags_on_a_jetstream_url_without_retention_are_refused_in_one_line(
        nats_trio: NatsCluster) -> None:
    url = nats_trio.store_url(stream=unique_stream_name(), replicas=3)
    done = subprocess.run([SIDECAR_BIN, "eventlog", "serve", "--store", url,
                           "--retain-days", "30"], capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "retention=1" in lines[0] and "--retain-days" in lines[0], lines
