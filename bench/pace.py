"""How fast this machine runs, right now: the yardstick printed with every run's figures.

A shared VM's pace drifts by a factor of two from hour to hour, and not evenly: pure
Python may run as fast as ever while memory, which a replay of a large log is bound
by, answers at half the speed. Figures of two runs compare only at about the same
pace, of both kinds.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

REPEATS = 5
ENTRIES = 1_000_000


@dataclass(frozen=True)
class Pace:
    """Milliseconds for a fixed stretch of work, the best of `REPEATS`."""

    python_ms: float
    """A million additions in a loop: the interpreter's own speed."""
    memory_ms: float
    """A million lookups in random order in a dict of a million: memory's latency."""

    @classmethod
    def now(cls) -> Pace:
        table = {str(number): number for number in range(ENTRIES)}
        keys = list(table)
        random.Random(0).shuffle(keys)

        def additions() -> None:
            total = 0
            for number in range(ENTRIES):
                total += number

        def lookups() -> None:
            total = 0
            for key in keys:
                total += table[key]

        return cls(_best(additions), _best(lookups))

    def __str__(self) -> str:
        return f"python {self.python_ms:.0f} ms, memory {self.memory_ms:.0f} ms"


def _best(work: Callable[[], None]) -> float:
    best = math.inf
    for _ in range(REPEATS):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best * 1000
