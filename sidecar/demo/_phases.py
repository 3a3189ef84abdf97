"""The sample upstreams' scripts: phases of behaviour on a wall clock shared by the processes.

The demo and its sample upstreams agree on one start time (``started_at``, UNIX seconds) and
one schedule each, so all know the current phase without talking to each other: an upstream
behaves accordingly and the demo's view shows the phase it is in. Schedules repeat.

Two schedules: ``payments``' (``BEHAVIOURS``: healthy, brownout, outage, recovery) and the
sick ``orders`` replica's (``REPLICA_BEHAVIOURS``: healthy, sick, healed); the other orders
replicas and ``inventory`` are always healthy (``STEADY``). A third schedule is not of how an
upstream answers but of how hard the host app calls one: ``catalog``'s load (``CATALOG_LOADS``:
normal, surge), against the fixed capacity of the catalog service (``CATALOG_CAPACITY``).

Pure code, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How an upstream (``payments``, or the sick ``orders`` replica) answers during a phase."""

    failure_ratio: float
    """Share of calls answered with ``failure_code`` (spread evenly, deterministic)."""
    latency_ms: tuple[float, float]
    """Each answer takes a uniformly drawn time in this range."""
    failure_code: str = "UNAVAILABLE"
    description: str = ""


BEHAVIOURS: Final[dict[str, Behaviour]] = {
    "healthy": Behaviour(0.01, (5.0, 25.0), description="answers fast, 1% errors"),
    "brownout": Behaviour(0.35, (150.0, 450.0), description="35% errors, 150-450 ms answers"),
    "outage": Behaviour(1.0, (1.0, 3.0), description="every call fails (UNAVAILABLE)"),
    "recovery": Behaviour(0.0, (5.0, 25.0), description="healthy again"),
}
"""What each phase name means. ``inventory`` is always healthy (see ``STEADY``)."""

STEADY: Final = Behaviour(0.0, (3.0, 10.0), description="always healthy")

DEFAULT_SCHEDULE: Final[tuple[tuple[str, float], ...]] = (
    ("healthy", 8.0), ("brownout", 8.0), ("outage", 12.0), ("recovery", 20.0),
)
"""Phase names and seconds; the schedule repeats after the last phase."""

REPLICA_BEHAVIOURS: Final[dict[str, Behaviour]] = {
    "healthy": Behaviour(0.0, (3.0, 10.0), description="every replica healthy"),
    "sick": Behaviour(1.0, (3.0, 10.0),
                      description="one replica answers UNAVAILABLE to every call"),
    "healed": Behaviour(0.0, (3.0, 10.0), description="the sick replica healed"),
}
"""What each phase of the sick ``orders`` replica means."""

DEFAULT_REPLICA_SCHEDULE: Final[tuple[tuple[str, float], ...]] = (
    ("healthy", 8.0), ("sick", 11.0), ("healed", 41.0),
)
"""The sick replica's phases: one 60 s cycle, so ``make demo`` (60 s) shows it ejected, back
after its ejection time, ejected again for longer while still sick, then back for good."""


@dataclass(frozen=True, slots=True)
class Capacity:
    """A service that answers at most ``concurrency`` calls at once, each taking a uniformly
    drawn time in ``service_ms``; further calls wait in the server for a free slot, so latency
    rises with load the way a saturated service's does."""

    concurrency: int
    service_ms: tuple[float, float]

    @property
    def calls_per_s(self) -> float:
        """The most calls a second it can answer."""
        low, high = self.service_ms
        return self.concurrency / ((low + high) / 2000.0)


CATALOG_CAPACITY: Final = Capacity(concurrency=4, service_ms=(22.0, 28.0))
"""About 160 calls/s: enough CPU to spare on 2 cores while three times that is offered."""


@dataclass(frozen=True, slots=True)
class Load:
    """How hard the host app calls an upstream during a phase."""

    calls_per_s: float
    description: str = ""


CATALOG_LOADS: Final[dict[str, Load]] = {
    "normal": Load(50.0, description="50 calls/s, well under its ~160/s capacity"),
    "surge": Load(480.0, description="480 calls/s, 3x its capacity"),
}
"""What each phase of ``catalog``'s load means."""

DEFAULT_CATALOG_SCHEDULE: Final[tuple[tuple[str, float], ...]] = (
    ("normal", 28.0), ("surge", 10.0), ("normal", 22.0),
)
"""A 60 s cycle whose surge comes after the orders replica's sick spell and payments' outage,
so each story of ``make demo`` has the stage to itself."""


def parse_schedule(text: str, behaviours: Mapping[str, object] = BEHAVIOURS,
                   flag: str = "--phases") -> tuple[tuple[str, float], ...]:
    """``"healthy=8,brownout=8,outage=12,recovery=20"`` → ``(("healthy", 8.0), ...)``.

    Names come from ``behaviours`` (any mapping of phase names). Raises ``ValueError``
    naming ``flag`` and the bad part.
    """
    schedule = []
    for part in text.split(","):
        name, sep, seconds = part.strip().partition("=")
        if not sep or name not in behaviours:
            raise ValueError(
                f"{flag}: {part.strip()!r}: expected NAME=SECONDS with NAME one of "
                f"{', '.join(behaviours)}")
        try:
            value = float(seconds)
        except ValueError:
            raise ValueError(f"{flag}: {part.strip()!r}: SECONDS must be a number") from None
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{flag}: {part.strip()!r}: SECONDS must be > 0 and finite")
        schedule.append((name, value))
    return tuple(schedule)


def format_schedule(schedule: Sequence[tuple[str, float]]) -> str:
    return ",".join(f"{name}={seconds:g}" for name, seconds in schedule)


@dataclass(frozen=True, slots=True)
class PhaseAt:
    name: str
    behaviour: Behaviour
    started_s: float
    """Seconds since the demo started at which this phase began."""
    ends_s: float
    cycle: int


def locate(schedule: Sequence[tuple[str, float]], elapsed_s: float
           ) -> tuple[int, float, float, int]:
    """Where ``elapsed_s`` falls in the (repeating) schedule: (index of the phase, when it
    began, when it ends, cycle)."""
    if not schedule:
        raise ValueError("empty schedule")
    period = sum(seconds for _, seconds in schedule)
    elapsed_s = max(0.0, elapsed_s)
    cycle, offset = divmod(elapsed_s, period)
    begin = cycle * period
    for index, (_, seconds) in enumerate(schedule):
        if offset < seconds:
            return index, begin, begin + seconds, int(cycle)
        offset -= seconds
        begin += seconds
    _, seconds = schedule[-1]  # float rounding at the very end of a cycle
    return len(schedule) - 1, begin - seconds, begin, int(cycle)


def phase_at(schedule: Sequence[tuple[str, float]], elapsed_s: float,
             behaviours: Mapping[str, Behaviour] = BEHAVIOURS) -> PhaseAt:
    """The phase in force ``elapsed_s`` seconds after the start (the schedule repeats)."""
    index, started_s, ends_s, cycle = locate(schedule, elapsed_s)
    name = schedule[index][0]
    return PhaseAt(name, behaviours[name], started_s, ends_s, cycle)


@dataclass(frozen=True, slots=True)
class LoadAt:
    name: str
    load: Load
    started_s: float
    ends_s: float
    cycle: int


def load_at(schedule: Sequence[tuple[str, float]], elapsed_s: float,
            loads: Mapping[str, Load] = CATALOG_LOADS) -> LoadAt:
    """The load phase in force ``elapsed_s`` seconds after the start (the schedule repeats)."""
    index, started_s, ends_s, cycle = locate(schedule, elapsed_s)
    name = schedule[index][0]
    return LoadAt(name, loads[name], started_s, ends_s, cycle)
