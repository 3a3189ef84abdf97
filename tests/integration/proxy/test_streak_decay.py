"""Under continuous traffic the trip streak decays with time spent
CLOSED, not with call counts, so a flapping upstream's second open period is longer.

A real upstream process and ``sidecar proxy --config`` started through its CLI; several
concurrent grpc.aio loops keep hundreds of calls a second going through the proxy while the
upstream fails, heals, and fails again about 2 s later. With a count-based decay the ~2 s of
healthy traffic (hundreds of count windows) would have wiped the streak, and the second open
period would be the base again; with ``streak_decay_ms`` (30 s here) the streak is still 1, so
the second trip opens for ``base x multiplier``.

Open periods are read from the sidecar itself (BreakerInfo: ``open_duration_ms``, and
``open_until`` minus the trip's ``last_transition.at``); the wall clock is only checked against
generous bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator

import grpc
import pytest

from sidecar.v1 import admin_pb2, admin_pb2_grpc, events_pb2
from tests.support.procs import SIDECAR_BIN
from tests.support.sidecar import SidecarProcess
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.integration

SERVICE = "decay.Svc"
METHOD = f"/{SERVICE}/Unary"
BREAKER = "decay"
BASE_MS, MULTIPLIER, DECAY_MS, WINDOW = 500, 2, 30_000, 20
LOOPS = 6  # concurrent callers
OPEN = events_pb2.BREAKER_STATE_OPEN
CLOSED = events_pb2.BREAKER_STATE_CLOSED

Info = admin_pb2.BreakerInfo


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory,
            upstream: UpstreamProcess) -> Iterator[SidecarProcess]:
    config = {"upstreams": {BREAKER: {
        "address": upstream.address, "routes": ["/decay."],
        "breaker": {
            "window": {"type": "count", "size": WINDOW}, "minimum_calls": 10,
            "failure_rate": 0.5, "consecutive_failures": 5, "half_open_probes": 3,
            "streak_decay_ms": DECAY_MS,
            "open": {"base_ms": BASE_MS, "multiplier": MULTIPLIER, "max_ms": 60_000,
                     "jitter": 0},
        },
    }}}
    with SidecarProcess(tmp_path_factory.mktemp("sidecar"), config) as process:
        yield process


class Traffic:
    """``LOOPS`` callers in a loop until stopped; counts every call by status."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.counts: Counter[str] = Counter()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    async def _loop(self, channel: grpc.aio.Channel) -> None:
        call = channel.unary_unary(METHOD)
        while not self._stop.is_set():
            try:
                await call(b"ping", timeout=2)
                self.counts["OK"] += 1
            except grpc.aio.AioRpcError as error:
                self.counts[error.code().name] += 1
                await asyncio.sleep(0.001)  # rejected at once while OPEN: do not spin

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Traffic]:
        async with grpc.aio.insecure_channel(self.address) as channel:
            self._tasks = [asyncio.create_task(self._loop(channel)) for _ in range(LOOPS)]
            try:
                yield self
            finally:
                self._stop.set()
                await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 10)


async def _until(admin: admin_pb2_grpc.SidecarAdminStub, predicate: Callable[[Info], bool],
                 what: str, timeout_s: float = 10.0) -> tuple[Info, float]:
    """Poll GetBreaker until ``predicate``; the info and the wall time it was seen at."""
    deadline = time.monotonic() + timeout_s
    while True:
        info = await admin.GetBreaker(admin_pb2.GetBreakerRequest(name=BREAKER), timeout=5)
        if predicate(info):
            return info, time.time()
        if time.monotonic() > deadline:
            raise AssertionError(f"breaker never {what} within {timeout_s}s; last: {info}")
        await asyncio.sleep(0.01)


def _seconds(stamp: object) -> float:
    return float(stamp.ToNanoseconds()) / 1e9  # type: ignore[attr-defined]


def _scheduled_open_s(info: Info) -> float:
    """The open period as the sidecar scheduled it: open_until minus the trip's time."""
    assert info.last_transition.to_state == OPEN
    return _seconds(info.open_until) - _seconds(info.last_transition.at)


async def _breakers_cli(admin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [SIDECAR_BIN, "breakers", "--admin", admin, *args],
        capture_output=True, text=True, timeout=30)


async def test_a_flapping_upstream_is_backed_off_longer_under_continuous_traffic(
        sidecar: SidecarProcess, upstream: UpstreamProcess) -> None:
    upstream.configure(SERVICE)  # healthy
    async with grpc.aio.insecure_channel(sidecar.admin_address) as admin_channel:
        admin = admin_pb2_grpc.SidecarAdminStub(admin_channel)
        async with asyncio.timeout(90), Traffic(sidecar.address).running() as traffic:
            await asyncio.sleep(0.5)
            info, _ = await _until(admin, lambda i: i.window.calls > 0, "saw a call")
            assert (info.state, info.trip_streak, info.streak_decay_in_ms) == (CLOSED, 0, 0)
            assert info.open_duration_ms == BASE_MS  # the next open period, at streak 0

            # 1. The upstream fails: the breaker trips for the base period.
            upstream.configure(SERVICE, code="UNAVAILABLE")
            first, _ = await _until(admin, lambda i: i.state == OPEN, "opened")
            assert (first.trip_streak, first.open_duration_ms) == (1, BASE_MS)
            assert _scheduled_open_s(first) == pytest.approx(BASE_MS / 1000, abs=0.02)
            assert first.streak_decay_in_ms == 0  # time OPEN does not count

            # 2. It heals: probes close the breaker; the streak is kept, its countdown starts.
            upstream.configure(SERVICE)
            healed, _ = await _until(admin, lambda i: i.state == CLOSED, "closed again")
            assert healed.trip_streak == 1
            assert 0 < healed.streak_decay_in_ms <= DECAY_MS
            assert healed.open_duration_ms == BASE_MS * MULTIPLIER  # what the next trip gets
            closed_at = time.monotonic()

            # 3. About 2 s of healthy traffic: far more than enough count windows to have
            #    decayed a count-based streak, far less than streak_decay_ms.
            calls_before = traffic.total
            rows = json.loads((await _breakers_cli(sidecar.admin_address, "--output",
                                                   "json")).stdout)
            row = next(r for r in rows if r["name"] == BREAKER)
            assert row["trip_streak"] == 1
            assert 0 < row["streak_decay_in_ms"] <= DECAY_MS
            table = (await _breakers_cli(sidecar.admin_address)).stdout.splitlines()
            column = table[0].split().index("STREAK_DECAY_IN")
            line = next(x for x in table[1:] if x.split()[0] == BREAKER)
            cell = line.split()[column]
            assert re.fullmatch(r"\d+\.\ds", cell) and 0 < float(cell[:-1]) <= DECAY_MS / 1000
            await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - closed_at)))
            healthy_calls = traffic.total - calls_before
            assert healthy_calls >= 10 * WINDOW, f"only {healthy_calls} calls in ~2 s"
            still, _ = await _until(admin, lambda i: True, "read")
            assert (still.state, still.trip_streak) == (CLOSED, 1)  # calls did not decay it
            assert still.streak_decay_in_ms < healed.streak_decay_in_ms  # time did count

            # 4. It fails again: the second open period is base x multiplier.
            upstream.configure(SERVICE, code="UNAVAILABLE")
            second, _ = await _until(admin, lambda i: i.state == OPEN, "opened again")
            assert (second.trip_streak, second.open_duration_ms) == (2, BASE_MS * MULTIPLIER)
            assert _scheduled_open_s(second) == pytest.approx(
                BASE_MS * MULTIPLIER / 1000, abs=0.02)
            upstream.configure(SERVICE)
            _, left_open_at = await _until(admin, lambda i: i.state != OPEN, "left OPEN")
            observed = left_open_at - _seconds(second.last_transition.at)
            assert 0.9 * BASE_MS * MULTIPLIER / 1000 <= observed <= 4.0, observed
            await _until(admin, lambda i: i.state == CLOSED, "closed after the second trip")

        assert traffic.counts["OK"] > 0 and traffic.counts["UNAVAILABLE"] > 0
        upstream.configure(SERVICE)
