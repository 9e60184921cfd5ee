"""Time, injected: production uses the wall clock; tests move a fake one."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Seconds since the Unix epoch, as a float."""

    def __call__(self) -> float: ...


def system_clock() -> float:
    """The wall clock."""
    return time.time()


def format_timestamp(seconds: float) -> str:
    """RFC 3339 in UTC with millisecond precision and a `Z`, as the contract says."""
    moment = datetime.fromtimestamp(round(seconds, 3), UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> float:
    """The inverse of `format_timestamp`; accepts any RFC 3339 form Python reads."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
