"""The test harness runs the nats-server the issue asks for, not whatever is on PATH."""

from __future__ import annotations

import pytest

from tests.support.nats import (
    REQUIRED_VERSION_PREFIX,
    NatsCluster,
    nats_server_binary,
    nats_server_version,
)

pytestmark = pytest.mark.integration


def test_the_nats_server_used_by_tests_is_version_2_15() -> None:
    assert nats_server_version(nats_server_binary()).startswith(REQUIRED_VERSION_PREFIX)


def test_a_three_node_cluster_elects_one_meta_leader_seen_by_every_node(
        nats_trio: NatsCluster) -> None:
    leaders = {node.meta_leader() for node in nats_trio.nodes}
    assert len(leaders) == 1
    assert leaders <= {node.name for node in nats_trio.nodes}
