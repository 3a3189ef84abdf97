"""JetStream fixtures (tests/support/nats.py) for the NATS adapter's integration tests."""

from tests.support.nats import nats_cluster, nats_single, nats_trio

__all__ = ["nats_cluster", "nats_single", "nats_trio"]
