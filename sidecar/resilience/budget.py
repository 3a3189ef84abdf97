"""The retry budget (Linkerd's): retries and hedges may add at most ``ratio`` of the recent
calls, plus a floor of ``min_per_s`` so a quiet upstream can still be retried.

Why a budget and not only ``max_attempts``: with every endpoint failing, ``max_attempts: 3``
alone triples the load on an upstream that is already down (a retry storm). The budget bounds
the extra load for any sequence of calls::

    granted <= ratio * deposits + min_per_s * seconds_since_start

Two accounts, both O(1) per call:

- the *ratio account*: every call (``deposit``) adds ``ratio`` of a token, in the time slot
  it was made; unspent credit expires ``ttl_s`` after it was deposited (the budget follows
  *recent* traffic); a withdrawal spends the oldest credit first;
- the *floor*: a token bucket filling at ``min_per_s`` tokens a second, holding at most one
  second's worth (at least one token), starting empty.

A withdrawal takes a whole token from the ratio account when it holds one, else from the floor.
Credit is kept in integer thousandths of a token so the arithmetic is exact.

Pure: the clock is injected; not thread-safe (the proxy calls it from its event loop).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final

__all__ = ["DEFAULT_TTL_S", "RetryBudget"]

DEFAULT_TTL_S: Final = 10.0
"""How long a call's credit counts towards the budget (Linkerd's default)."""
_SLOTS: Final = 10
"""Slots the ttl is cut into: credit expires a slot at a time, within ttl/10 of its age."""
_MILLI: Final = 1000
"""Credit units per token."""


class RetryBudget:
    """Tokens for retries and hedges of one upstream (see the module docstring)."""

    def __init__(self, ratio: float, min_per_s: float, *, clock: Callable[[], float],
                 ttl_s: float = DEFAULT_TTL_S) -> None:
        if not 0.0 <= ratio <= 1000.0:
            raise ValueError(f"ratio must be in [0, 1000], got {ratio!r}")
        if min_per_s < 0:
            raise ValueError(f"min_per_s must be >= 0, got {min_per_s!r}")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s!r}")
        self._ratio = ratio
        self._min_per_s = min_per_s
        self._clock = clock
        self._ttl_s = ttl_s
        self._slot_s = ttl_s / _SLOTS
        self._credit_per_call = int(ratio * _MILLI)  # floor: never more than ratio
        self._slots: deque[list[int]] = deque()  # [slot index, unspent credit], oldest first
        self._credit = 0
        now = clock()
        self._floor_tokens = 0.0
        self._floor_capacity = max(1.0, min_per_s)
        self._floor_at = now
        self.deposits = 0
        self.granted = 0
        self.exhausted = 0

    @property
    def ratio(self) -> float:
        return self._ratio

    @property
    def min_per_s(self) -> float:
        return self._min_per_s

    @property
    def ttl_s(self) -> float:
        return self._ttl_s

    def deposit(self) -> None:
        """One caller's call started (once per call, never per attempt)."""
        now = self._clock()
        self._expire(now)
        self.deposits += 1
        if not self._credit_per_call:
            return
        slot = int(now // self._slot_s)
        if self._slots and self._slots[-1][0] == slot:
            self._slots[-1][1] += self._credit_per_call
        else:
            self._slots.append([slot, self._credit_per_call])
        self._credit += self._credit_per_call

    def try_withdraw(self) -> bool:
        """One retry or hedge asks for a token: True when granted, False when the budget is
        exhausted (counted in ``exhausted``)."""
        now = self._clock()
        self._expire(now)
        if self._credit >= _MILLI:
            self._spend_credit(_MILLI)
        else:
            self._refill_floor(now)
            if self._floor_tokens < 1.0:
                self.exhausted += 1
                return False
            self._floor_tokens -= 1.0
        self.granted += 1
        return True

    def available(self) -> float:
        """Tokens that could be granted now (ratio credit plus the floor's)."""
        now = self._clock()
        self._expire(now)
        self._refill_floor(now)
        return self._credit / _MILLI + self._floor_tokens

    def _spend_credit(self, amount: int) -> None:
        self._credit -= amount
        while amount:
            oldest = self._slots[0]
            taken = min(amount, oldest[1])
            oldest[1] -= taken
            amount -= taken
            if not oldest[1]:
                self._slots.popleft()

    def _expire(self, now: float) -> None:
        first_live = int(now // self._slot_s) - _SLOTS + 1
        while self._slots and self._slots[0][0] < first_live:
            self._credit -= self._slots.popleft()[1]

    def _refill_floor(self, now: float) -> None:
        elapsed = now - self._floor_at
        if elapsed > 0:
            self._floor_tokens = min(self._floor_capacity,
                                     self._floor_tokens + elapsed * self._min_per_s)
            self._floor_at = now
