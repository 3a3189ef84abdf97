"""The assembly point telemetry and events plug into: build_app(observers, breaker_listeners,
plugins). The proxy runs in this process (as a plugin author would test it); the upstream is the
real upstream process."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import yaml

from sidecar.breaker import BreakerListener, Mode, ModeChange, Transition
from sidecar.config import SidecarConfig, parse_config
from sidecar.protection import CallInfo, CallScope, ConfigSource, MetadataItem, ProxyPlugin
from sidecar.proxy.app import ProxyApp, build_app
from tests.integration.proxy._calls import unary
from tests.support.procs import free_port
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.integration

CURRENT_CALL: contextvars.ContextVar[str] = contextvars.ContextVar("current_call", default="")


@dataclass
class Recorder:
    """An observer that records everything and marks the call current in a contextvar, as a
    tracing observer makes its span current."""

    infos: list[CallInfo] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def start_call(self, info: CallInfo) -> Iterator[CallScope]:
        self.infos.append(info)
        token = CURRENT_CALL.set(f"call-{len(self.infos)}")
        try:
            yield self  # type: ignore[misc]
        finally:
            CURRENT_CALL.reset(token)

    def outgoing_metadata(self, metadata: list[MetadataItem]) -> None:
        metadata.append(("traceparent", f"00-{'a' * 32}-{'b' * 16}-01"))

    def rejected(self, reason: str, retry_after_ms: int) -> None:
        self.events.append(f"rejected:{reason}")

    def fallback(self, kind: str, target: str) -> None:
        self.events.append(f"fallback:{kind}:{target}")

    def overflow(self) -> None:
        self.events.append("overflow")

    def endpoint(self, address: str) -> None:
        pass

    def finish(self, code: grpc.StatusCode, duration_s: float) -> None:
        self.events.append(f"finish:{code.name}")


@dataclass
class Listener(BreakerListener):
    transitions: list[tuple[str, str, str]] = field(default_factory=list)
    modes: list[ModeChange] = field(default_factory=list)

    def on_transition(self, transition: Transition) -> None:
        self.transitions.append((transition.breaker, transition.to_state.value,
                                 CURRENT_CALL.get()))

    def on_mode_change(self, change: ModeChange) -> None:
        self.modes.append(change)


def _config(upstream: UpstreamProcess) -> SidecarConfig:
    return parse_config(yaml.safe_dump({
        "service": "hooks",
        "listen": f"127.0.0.1:{free_port()}",
        "admin_listen": f"127.0.0.1:{free_port()}",
        "shutdown_grace_s": 1,
        "upstreams": {
            "pay": {"address": upstream.address, "routes": ["/hpay."],
                    "breaker": {"window": {"size": 2}, "minimum_calls": 2,
                                "consecutive_failures": None,
                                "open": {"base_ms": 60000, "jitter": 0}},
                    "fallback": {"status": "UNAVAILABLE", "message": "degraded"}},
        },
    }))


@pytest.fixture
async def running(upstream: UpstreamProcess
                  ) -> AsyncIterator[tuple[ProxyApp, Recorder, Listener, list[str]]]:
    recorder, listener, lifecycle = Recorder(), Listener(), []

    async def start() -> None:
        lifecycle.append("start")

    async def stop() -> None:
        lifecycle.append("stop")

    def applied(config: SidecarConfig, source: ConfigSource) -> None:
        lifecycle.append(f"config:{source}")

    plugin = ProxyPlugin("test", observers=[recorder], breaker_listeners=[listener],
                         start=start, stop=stop, config_applied=applied)
    app = build_app(_config(upstream), plugins=[plugin])
    await app.start()
    try:
        yield app, recorder, listener, lifecycle
    finally:
        await app.stop(grace_s=0.5)


async def test_observer_sees_each_call_and_can_add_outgoing_metadata(
        running: tuple[ProxyApp, Recorder, Listener, list[str]],
        upstream: UpstreamProcess) -> None:
    app, recorder, _, lifecycle = running
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        outcome = await unary(channel, "/hpay.Ok/Unary", metadata=(("x-user", "u1"),))
    assert outcome.code == grpc.StatusCode.OK
    info = recorder.infos[-1]
    assert (info.upstream, info.method, info.breaker) == ("pay", "/hpay.Ok/Unary", "pay")
    assert info.upstream_address == upstream.address
    assert info.peer.startswith("ipv4:127.0.0.1:")
    assert ("x-user", "u1") in info.metadata
    assert recorder.events[-1] == "finish:OK"
    seen = dict(map(tuple, upstream.method_stats("/hpay.Ok/Unary")["last_metadata"]))
    assert seen["traceparent"] == f"00-{'a' * 32}-{'b' * 16}-01"
    assert lifecycle == ["start", "config:start"]


async def test_breaker_listeners_run_inside_the_causing_calls_context(
        running: tuple[ProxyApp, Recorder, Listener, list[str]],
        upstream: UpstreamProcess) -> None:
    app, recorder, listener, _ = running
    upstream.configure("hpay.Bad", code="UNAVAILABLE")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        for _ in range(2):
            await unary(channel, "/hpay.Bad/Unary")
        rejected = await unary(channel, "/hpay.Bad/Unary")
    # The trip happened while the second call's scope was current.
    assert listener.transitions == [("pay", "open", f"call-{len(recorder.infos) - 1}")]
    assert rejected.details == "degraded"
    assert recorder.events[-3:] == ["rejected:open", "fallback:status:UNAVAILABLE",
                                    "finish:UNAVAILABLE"]


async def test_unrouted_calls_are_observed_too(
        running: tuple[ProxyApp, Recorder, Listener, list[str]]) -> None:
    app, recorder, _, _ = running
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        await unary(channel, "/elsewhere.S/M")
    assert (recorder.infos[-1].upstream, recorder.infos[-1].method) == ("", "/elsewhere.S/M")
    assert recorder.events[-1] == "finish:UNIMPLEMENTED"


async def test_reload_reaches_plugins_and_new_breakers_get_the_listeners(
        running: tuple[ProxyApp, Recorder, Listener, list[str]],
        upstream: UpstreamProcess) -> None:
    app, _, listener, lifecycle = running
    raw: dict[str, Any] = app.config.model_dump(mode="json")
    raw["upstreams"]["ship"] = {"address": upstream.address, "routes": ["/hship."],
                                "breaker": {"mode": "forced_open"}}
    app.reload(SidecarConfig.model_validate(raw))
    assert lifecycle[-1] == "config:reload"
    assert app.breakers.names() == ["pay", "ship"]
    app.breakers.get("ship").set_mode(Mode.ENFORCE)  # type: ignore[union-attr]
    assert [change.breaker for change in listener.modes] == ["ship"]
