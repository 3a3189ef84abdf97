"""Bad input to every RPC of sidecar.v1.SidecarAdmin, and to the health and reflection services
of both servers, on real processes started through the CLI.

Raw bytes that are not a valid message must get INVALID_ARGUMENT; valid messages with bad
contents (unknown breaker names, mode numbers outside the enum, huge strings) a clear refusal.
Afterwards the sidecar still runs, answers SERVING, logged no traceback, and its breaker is in
the mode the test left it in.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, cast

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.v1 import admin_pb2, admin_pb2_grpc, events_pb2
from tests.fuzz._checks import CALL_TIMEOUT_S, ServerUnderFuzz, assert_clear_refusal
from tests.fuzz.conftest import SidecarStack
from tests.integration.eventlog._server import EventLogProcess

pytestmark = pytest.mark.integration

ADMIN = "sidecar.v1.SidecarAdmin"
ADMIN_REQUESTS: dict[str, Any] = {
    "ListBreakers": admin_pb2.ListBreakersRequest,
    "GetBreaker": admin_pb2.GetBreakerRequest,
    "SetBreakerMode": admin_pb2.SetBreakerModeRequest,
}
BREAKER = "echo"
"""The one breaker of the fuzzed sidecar (its upstream's name)."""
VALID_MODES = frozenset(events_pb2.BreakerMode.values()) - {events_pb2.BREAKER_MODE_UNSPECIFIED}

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_text = st.text(st.characters(codec="utf-8"), max_size=2000)


def _decodes(request_class: Any, payload: bytes) -> bool:
    try:
        request_class.FromString(payload)
    except Exception:
        return False
    return True


def _unary(channel: grpc.Channel, path: str, payload: bytes) -> grpc.RpcError | None:
    try:
        channel.unary_unary(path)(payload, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as error:
        return error
    return None


def test_random_bytes_to_every_admin_rpc_get_invalid_argument_or_an_answer(
        stack: SidecarStack, sidecar_server: ServerUnderFuzz) -> None:
    codes: Counter[str] = Counter()
    started = time.monotonic()
    with grpc.insecure_channel(stack.sidecar.admin_address) as channel:

        @FUZZ
        @given(method=st.sampled_from(sorted(ADMIN_REQUESTS)), payload=st.binary(max_size=512))
        def fuzz(method: str, payload: bytes) -> None:
            error = _unary(channel, f"/{ADMIN}/{method}", payload)
            codes[error.code().name if error else "OK"] += 1
            if not _decodes(ADMIN_REQUESTS[method], payload):
                assert error is not None and error.code() is grpc.StatusCode.INVALID_ARGUMENT, (
                    f"{method}: undecodable bytes got {error.code() if error else 'OK'}")
            elif error is not None:
                assert_clear_refusal(error, f"{method}({payload[:40]!r})")

        fuzz()
        _restore_enforce(channel)
    print(f"\nFUZZ admin raw bytes: {sum(codes.values())} calls in "
          f"{time.monotonic() - started:.1f} s, {dict(codes)}")
    assert codes["INVALID_ARGUMENT"] > 0
    sidecar_server.assert_alive_and_serving()
    sidecar_server.assert_no_traceback_logged()


def _restore_enforce(channel: grpc.Channel) -> None:
    stub = admin_pb2_grpc.SidecarAdminStub(channel)  # type: ignore[no-untyped-call]
    stub.SetBreakerMode(admin_pb2.SetBreakerModeRequest(
        name=BREAKER, mode=events_pb2.BREAKER_MODE_ENFORCE), timeout=CALL_TIMEOUT_S)


def test_admin_requests_with_bad_contents_are_refused_with_a_clear_status(
        stack: SidecarStack, sidecar_server: ServerUnderFuzz) -> None:
    codes: Counter[str] = Counter()
    with grpc.insecure_channel(stack.sidecar.admin_address) as channel:
        stub = admin_pb2_grpc.SidecarAdminStub(channel)  # type: ignore[no-untyped-call]

        @FUZZ
        @given(name=_text | st.just(BREAKER) | st.just(f"{BREAKER}/x"),
               mode=st.integers(-(2**31), 2**31 - 1) | st.sampled_from(sorted(VALID_MODES)),
               get=st.booleans())
        def fuzz(name: str, mode: int, get: bool) -> None:
            try:
                if get:
                    info = stub.GetBreaker(admin_pb2.GetBreakerRequest(name=name),
                                           timeout=CALL_TIMEOUT_S)
                else:
                    info = stub.SetBreakerMode(
                        admin_pb2.SetBreakerModeRequest(name=name, mode=cast(Any, mode)),
                        timeout=CALL_TIMEOUT_S)
            except grpc.RpcError as error:
                codes[error.code().name] += 1
                assert_clear_refusal(error, f"name={name[:40]!r} mode={mode}")
                assert not (name == BREAKER and (get or mode in VALID_MODES)), (
                    f"a valid request was refused: {error.code().name}: {error.details()}")
                return
            codes["OK"] += 1
            assert name == BREAKER, f"an unknown breaker {name[:40]!r} was answered"
            assert get or info.mode == mode

        fuzz()
        _restore_enforce(channel)
        info = stub.GetBreaker(admin_pb2.GetBreakerRequest(name=BREAKER), timeout=CALL_TIMEOUT_S)
    print(f"\nFUZZ admin messages: {sum(codes.values())} calls, {dict(codes)}")
    assert info.mode == events_pb2.BREAKER_MODE_ENFORCE
    assert codes["NOT_FOUND"] > 0 and codes["INVALID_ARGUMENT"] > 0
    sidecar_server.assert_alive_and_serving()
    sidecar_server.assert_no_traceback_logged()


# --- health and reflection, on both servers ---------------------------------------------------

_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
_REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def _fuzz_health_and_reflection(address: str) -> Counter[str]:
    codes: Counter[str] = Counter()
    with grpc.insecure_channel(address) as channel:

        @FUZZ
        @given(which=st.sampled_from(["check", "watch", "reflection"]),
               payload=st.binary(max_size=256))
        def fuzz(which: str, payload: bytes) -> None:
            try:
                if which == "check":
                    channel.unary_unary(_HEALTH_CHECK)(payload, timeout=CALL_TIMEOUT_S)
                elif which == "watch":
                    stream = channel.unary_stream(_HEALTH_WATCH)(payload, timeout=1.0)
                    next(iter(stream), None)
                    stream.cancel()
                else:
                    replies = channel.stream_stream(_REFLECTION)(iter([payload]),
                                                                 timeout=CALL_TIMEOUT_S)
                    list(replies)
            except grpc.RpcError as error:
                codes[f"{which}:{error.code().name}"] += 1
                request_class = health_pb2.HealthCheckRequest
                if which != "reflection" and not _decodes(request_class, payload):
                    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, which
                elif error.code() is grpc.StatusCode.CANCELLED and which == "watch":
                    pass  # our own cancel of a valid watch
                else:
                    assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT,
                                            grpc.StatusCode.NOT_FOUND), (
                        f"{which}: {error.code().name}: {error.details()}")
                return
            codes[f"{which}:OK"] += 1

        fuzz()
    return codes


def test_random_bytes_to_health_and_reflection_of_both_servers_get_a_clear_status(
        stack: SidecarStack, eventlog: EventLogProcess, sidecar_server: ServerUnderFuzz,
        eventlog_server: ServerUnderFuzz) -> None:
    for server in (sidecar_server, eventlog_server):
        codes = _fuzz_health_and_reflection(server.health_address)
        print(f"\nFUZZ {server.name} health+reflection: {sum(codes.values())} calls, "
              f"{dict(codes)}")
        server.assert_alive_and_serving()
        server.assert_no_traceback_logged()


OVERSIZED_BYTES = 5 * 1024 * 1024
"""Larger than both servers' 4 MiB message limit."""


def test_oversized_requests_are_refused_with_resource_exhausted_by_both_servers(
        stack: SidecarStack, eventlog: EventLogProcess, sidecar_server: ServerUnderFuzz,
        eventlog_server: ServerUnderFuzz) -> None:
    head = eventlog.head()
    payload = b"\x0a" + b"\xff" * OVERSIZED_BYTES  # a field tag, then more than the limit
    for server, path in ((eventlog_server, "/sidecar.v1.EventLog/Append"),
                         (sidecar_server, f"/{ADMIN}/GetBreaker")):
        with grpc.insecure_channel(server.health_address) as channel:
            error = _unary(channel, path, payload)
        assert error is not None and error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, (
            f"{server.name}: {error.code() if error else 'OK'}")
        server.assert_alive_and_serving()
        server.assert_no_traceback_logged()
    assert eventlog.head() == head
