"""Listener fan-out: tell every listener, in order, and never let one fail the call.

Listeners run on the data path, in the thread or task that caused the change, after the
breaker's lock is released (see :class:`BreakerListener`). An exception is logged on the
``sidecar.breaker`` logger and swallowed: observability must never fail a call.
"""

from __future__ import annotations

import logging

from sidecar.breaker._types import BreakerListener, ModeChange, Transition

_log = logging.getLogger("sidecar.breaker")


def tell_transition(
    name: str, listeners: tuple[BreakerListener, ...], transition: Transition
) -> None:
    """``on_transition`` on each listener. Never raises."""
    for listener in listeners:
        try:
            listener.on_transition(transition)
        except Exception:
            _log.exception(
                "breaker %s: listener %r failed on %s -> %s",
                name,
                listener,
                transition.from_state.value,
                transition.to_state.value,
            )


def tell_mode_change(
    name: str, listeners: tuple[BreakerListener, ...], change: ModeChange
) -> None:
    """``on_mode_change`` on each listener. Never raises."""
    for listener in listeners:
        try:
            listener.on_mode_change(change)
        except Exception:
            _log.exception("breaker %s: listener %r failed on mode change", name, listener)
