"""Throttling failed logins: per username and per client address, over a sliding window."""

from __future__ import annotations

import math
from collections import deque

from tracker.clock import Clock
from tracker.errors import RateLimited


class Throttle:
    """At most `limit` failures per key within `window` seconds; then 429 until one ages out."""

    def __init__(self, clock: Clock, *, limit: int, window: float) -> None:
        self._clock = clock
        self._limit = limit
        self._window = window
        self._failures: dict[str, deque[float]] = {}

    def check(self, key: str) -> None:
        """`RateLimited` if `key` has used up its failures in the window."""
        failures = self._recent(key)
        if failures is not None and len(failures) >= self._limit:
            wait = failures[0] + self._window - self._clock()
            raise RateLimited(max(1, math.ceil(wait)))

    def fail(self, key: str) -> None:
        """Count a failure for `key`."""
        self._failures.setdefault(key, deque()).append(self._clock())

    def forgive(self, key: str) -> None:
        """Forget `key`'s failures (after it succeeded)."""
        self._failures.pop(key, None)

    def _recent(self, key: str) -> deque[float] | None:
        failures = self._failures.get(key)
        if failures is None:
            return None
        horizon = self._clock() - self._window
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return None
        return failures


class LoginThrottle:
    """The two throttles a login passes: its username's and its client address's."""

    def __init__(
        self,
        clock: Clock,
        *,
        per_username: int = 5,
        per_address: int = 20,
        window: float = 15 * 60,
    ) -> None:
        self.usernames = Throttle(clock, limit=per_username, window=window)
        self.addresses = Throttle(clock, limit=per_address, window=window)

    def check(self, username: str, address: str) -> None:
        """`RateLimited` if either the username or the address failed too often lately."""
        self.usernames.check(username.lower())
        self.addresses.check(address)

    def failed(self, username: str, address: str) -> None:
        self.usernames.fail(username.lower())
        self.addresses.fail(address)

    def succeeded(self, username: str) -> None:
        self.usernames.forgive(username.lower())
