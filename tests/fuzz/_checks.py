"""What every fuzz test checks after throwing bad input at a server: still running, still
SERVING, no traceback in its log, and every answer a clear status."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.procs import ManagedProcess

CALL_TIMEOUT_S = 5.0
"""Deadline of each fuzz call: a server that does not answer by then counts as hung."""

CLEAR_REFUSALS = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.OUT_OF_RANGE,
})
"""Statuses that tell a caller what was wrong with its request. Anything else for a bad
request (UNKNOWN, INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED...) is a server fault."""


@dataclass
class ServerUnderFuzz:
    """A server process and the gRPC address where its health service answers."""

    name: str
    process: ManagedProcess
    health_address: str

    def assert_alive_and_serving(self) -> None:
        code = self.process.proc.poll()
        assert code is None, f"{self.name} exited with {code}:\n{self.process.output()[-4000:]}"
        with grpc.insecure_channel(self.health_address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT_S)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    def assert_no_traceback_logged(self) -> None:
        output = self.process.output()
        assert "Traceback" not in output, f"{self.name} logged a traceback:\n{output[-4000:]}"


def assert_clear_refusal(error: grpc.RpcError, what: str) -> None:
    code = error.code()
    assert code in CLEAR_REFUSALS, f"{what}: got {code.name}: {error.details()}"
    assert error.details(), f"{what}: {code.name} without details"
