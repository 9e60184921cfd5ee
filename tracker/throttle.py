"""Throttling logins: per username and per client address, over a sliding window.

An attempt is counted before the password is checked, so guesses sent all at
once are counted as they arrive, not after their (slow) checks. A success
forgives its username's failures, and gives its address back the one attempt.
Where attempts are counted is up to the store: in this process's memory for the
embedded log, in the database when several instances share one, so that their
number does not multiply an attacker's tries.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

from tracker.clock import Clock
from tracker.errors import RateLimited


class Attempts(Protocol):
    """Login attempts per key, kept for a window."""

    async def take(self, key: str, limit: int, window: float, now: float) -> float | None:
        """Count an attempt for `key` at `now` (or at the time of a clock every process
        shares), unless `limit` attempts were counted in the `window` before it; then
        count nothing and return how long until one ages out."""
        ...

    async def give_back(self, key: str) -> None:
        """Uncount the latest attempt of `key`."""
        ...

    async def forget(self, key: str) -> None:
        """Uncount every attempt of `key`."""
        ...


class MemoryAttempts:
    """Attempts counted in this process (the embedded log has one process)."""

    def __init__(self) -> None:
        self._attempts: dict[str, deque[float]] = {}

    async def take(self, key: str, limit: int, window: float, now: float) -> float | None:
        attempts = self._attempts.setdefault(key, deque())
        while attempts and attempts[0] <= now - window:
            attempts.popleft()
        if len(attempts) >= limit:
            return attempts[0] + window - now
        attempts.append(now)
        return None

    async def give_back(self, key: str) -> None:
        attempts = self._attempts.get(key)
        if attempts:
            attempts.pop()
        if not attempts:
            self._attempts.pop(key, None)

    async def forget(self, key: str) -> None:
        self._attempts.pop(key, None)


class LoginThrottle:
    """The two limits a login passes: its username's and its client address's."""

    def __init__(
        self,
        clock: Clock,
        attempts: Attempts | None = None,
        *,
        per_username: int = 5,
        per_address: int = 20,
        window: float = 15 * 60,
    ) -> None:
        self._clock = clock
        self._attempts = attempts if attempts is not None else MemoryAttempts()
        self._per_username = per_username
        self._per_address = per_address
        self._window = window

    async def attempt(self, username: str, address: str) -> None:
        """Count a login attempt; `RateLimited` if the username or the address has used up
        its attempts."""
        now = self._clock()
        user, place = _username_key(username), _address_key(address)
        wait = await self._attempts.take(user, self._per_username, self._window, now)
        if wait is None:
            wait = await self._attempts.take(place, self._per_address, self._window, now)
            if wait is not None:
                await self._attempts.give_back(user)
        if wait is not None:
            raise RateLimited(max(1, math.ceil(wait)))

    async def succeeded(self, username: str, address: str) -> None:
        """The attempt logged in: forgive the username, give the address its attempt back."""
        await self._attempts.forget(_username_key(username))
        await self._attempts.give_back(_address_key(address))


def _username_key(username: str) -> str:
    return f"username:{username.lower()}"


def _address_key(address: str) -> str:
    return f"address:{address}"
