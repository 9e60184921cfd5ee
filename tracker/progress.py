"""A progress bar for long commands: on a terminal only, and only once the work takes a while.

Piped or redirected output stays exactly what the command prints, with no bar in
between; on a terminal the bar appears on stderr after `DELAY` seconds, redraws a
few times a second, and is wiped when the work is done.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

DELAY = 1.0
"""Seconds of work before the bar appears."""
REDRAW = 0.2
"""Seconds between redraws."""
WIDTH = 30
CHECK_EVERY = 4096
"""Units of work between looks at the clock (advancing must cost next to nothing)."""


class Progress:
    """Counts units of work towards `total` and shows how far it got."""

    def __init__(
        self,
        label: str,
        total: int,
        unit: str = "events",
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._enabled = total > 0 and self._stream.isatty()
        self._started = clock()
        self._next_look = CHECK_EVERY
        self._next_draw = self._started + DELAY
        self._shown = False

    def advance(self, amount: int = 1) -> None:
        """`amount` more units are done."""
        self.done += amount
        if self.done >= self._next_look and self._enabled:
            self._next_look = self.done + CHECK_EVERY
            now = self._clock()
            if now >= self._next_draw:
                self._next_draw = now + REDRAW
                self._draw(now)

    def close(self) -> None:
        """The work is over: wipe the bar, if it was shown."""
        if self._shown:
            self._stream.write("\r\033[K")
            self._stream.flush()
            self._shown = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _draw(self, now: float) -> None:
        share = min(1.0, self.done / self.total)
        filled = round(share * WIDTH)
        elapsed = now - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        self._stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] {share:4.0%} "
            f"{self.done:,}/{self.total:,} {self.unit}, {rate:,.0f}/s\033[K"
        )
        self._stream.flush()
        self._shown = True
