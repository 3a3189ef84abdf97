"""Routing and admitting one intercepted call: the only place library mode asks
:mod:`sidecar.protection`, so the aio and the sync interceptors judge calls the same way."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sidecar.protection import NOOP_SCOPE, Admission, Rejection, UpstreamGuard, admit

if TYPE_CHECKING:
    from sidecar.interceptor._protection import Protection

__all__ = ["Protected", "decide", "method_name"]


class Protected:
    """One upstream in library mode: its guard and default deadline."""

    __slots__ = ("guard", "timeout_s")

    def __init__(self, guard: UpstreamGuard, timeout_s: float) -> None:
        self.guard = guard
        self.timeout_s = timeout_s


def _no_channel(name: str) -> Protected | None:
    return None  # library mode cannot reach a fallback upstream: no channel to it


def method_name(method: str | bytes) -> str:
    return method.decode() if isinstance(method, bytes) else method


def decide(protection: Protection, pinned: str | None, method: str
           ) -> tuple[Protected, Admission] | Rejection | None:
    """The guard that takes ``method`` and its admission, the rejection to answer with, or
    None when no route matches (the call passes through untouched)."""
    target = protection._target(method, pinned)
    if target is None:
        return None
    return admit(target, method, NOOP_SCOPE, _no_channel)
