"""Several call observers as one: what the proxy runs when more than one plugin observes calls.

Every report fans out to each observer's scope in turn; a scope that raises is logged and
skipped, so one plugin's bug never hides a call from the others nor fails the call (the rule
of :mod:`sidecar.protection.hooks`). :func:`combine_observers` picks the cheapest equivalent:
no observer costs nothing per call, a single one is called directly.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from types import TracebackType

import grpc

from sidecar.protection.hooks import NOOP_OBSERVER, CallInfo, CallObserver, CallScope, MetadataItem

__all__ = ["CompositeObserver", "combine_observers"]

_log = logging.getLogger("sidecar.proxy")


class _CompositeScope:
    """Fans every report out to several scopes; one failing scope never hides the others."""

    __slots__ = ("_managers", "_scopes")

    def __init__(self, managers: list[contextlib.AbstractContextManager[CallScope]]) -> None:
        self._managers = managers
        self._scopes: list[CallScope] = []

    def __enter__(self) -> _CompositeScope:
        for manager in self._managers:
            self._scopes.append(manager.__enter__())
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for manager in reversed(self._managers[: len(self._scopes)]):
            try:
                manager.__exit__(exc_type, exc, tb)
            except Exception:
                _log.exception("call observer failed on exit")

    def outgoing_metadata(self, metadata: list[MetadataItem]) -> None:
        for scope in self._scopes:
            try:
                scope.outgoing_metadata(metadata)
            except Exception:
                _log.exception("call observer failed in outgoing_metadata")

    def rejected(self, reason: str, retry_after_ms: int) -> None:
        for scope in self._scopes:
            try:
                scope.rejected(reason, retry_after_ms)
            except Exception:
                _log.exception("call observer failed in rejected")

    def fallback(self, kind: str, target: str) -> None:
        for scope in self._scopes:
            try:
                scope.fallback(kind, target)
            except Exception:
                _log.exception("call observer failed in fallback")

    def overflow(self) -> None:
        for scope in self._scopes:
            try:
                scope.overflow()
            except Exception:
                _log.exception("call observer failed in overflow")

    def endpoint(self, address: str) -> None:
        for scope in self._scopes:
            try:
                scope.endpoint(address)
            except Exception:
                _log.exception("call observer failed in endpoint")

    def attempt_started(self, attempt: int, address: str, hedge: bool) -> None:
        for scope in self._scopes:
            try:
                scope.attempt_started(attempt, address, hedge)
            except Exception:
                _log.exception("call observer failed in attempt_started")

    def attempt_ended(self, attempt: int, code: grpc.StatusCode | None,
                      duration_s: float, outcome: str) -> None:
        for scope in self._scopes:
            try:
                scope.attempt_ended(attempt, code, duration_s, outcome)
            except Exception:
                _log.exception("call observer failed in attempt_ended")

    def retry(self, reason: str, delay_s: float) -> None:
        for scope in self._scopes:
            try:
                scope.retry(reason, delay_s)
            except Exception:
                _log.exception("call observer failed in retry")

    def retry_refused(self, reason: str) -> None:
        for scope in self._scopes:
            try:
                scope.retry_refused(reason)
            except Exception:
                _log.exception("call observer failed in retry_refused")

    def hedge(self, attempt: int) -> None:
        for scope in self._scopes:
            try:
                scope.hedge(attempt)
            except Exception:
                _log.exception("call observer failed in hedge")

    def shed(self, limit: int, in_flight: int) -> None:
        for scope in self._scopes:
            try:
                scope.shed(limit, in_flight)
            except Exception:
                _log.exception("call observer failed in shed")

    def finish(self, code: grpc.StatusCode, duration_s: float) -> None:
        for scope in self._scopes:
            try:
                scope.finish(code, duration_s)
            except Exception:
                _log.exception("call observer failed in finish")


class CompositeObserver:
    """Several observers as one, entered in order (put tracing first so its span is current
    while the others run) and exited in reverse order."""

    __slots__ = ("observers",)

    def __init__(self, observers: Sequence[CallObserver]) -> None:
        self.observers = tuple(observers)

    def start_call(self, info: CallInfo) -> _CompositeScope:
        return _CompositeScope([observer.start_call(info) for observer in self.observers])


def combine_observers(observers: Sequence[CallObserver]) -> CallObserver:
    """The cheapest observer equivalent to ``observers``: NOOP, the single one, or a composite."""
    real = [o for o in observers if o is not NOOP_OBSERVER]
    if not real:
        return NOOP_OBSERVER
    if len(real) == 1:
        return real[0]
    return CompositeObserver(real)
