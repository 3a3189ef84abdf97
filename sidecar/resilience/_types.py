"""What the adaptive concurrency limit tells the rest of the sidecar (shared by the limiter,
telemetry and events; stdlib only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["SheddingChange", "SheddingListener", "SheddingPhase"]

SheddingPhase = Literal["started", "stopped"]


@dataclass(frozen=True, slots=True)
class SheddingChange:
    """An upstream's adaptive limit started or stopped shedding calls.

    A period starts with the first call shed and stops once no call has been shed for the
    limiter's quiet time (hysteresis: one period per overload, not one event per call).
    """

    upstream: str
    phase: SheddingPhase
    limit: int
    """The adaptive limit at the moment of the change."""
    in_flight: int
    shed: int
    """Calls shed in this period so far (on ``stopped``: the whole period)."""
    algorithm: str
    """``gradient2`` or ``vegas``."""
    duration_s: float
    """Length of the period (0 on ``started``)."""


class SheddingListener(Protocol):
    """Told of every shedding period's start and stop, synchronously, on the thread that made
    the decision (the proxy's event loop): must not block."""

    def on_shedding(self, change: SheddingChange) -> None: ...
