"""What every scenario shares: its options, and the figures it reports against its goals."""

from __future__ import annotations

import operator
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio

RESULTS_DIR = Path(__file__).parent / "results"
"""Generated files (results, cached logs); gitignored."""


@dataclass(frozen=True)
class Options:
    """How a scenario is run: `smoke` means tiny sizes and no claims about speed."""

    smoke: bool
    workdir: Path
    """A scratch directory, removed after the run."""
    cache_dir: Path = RESULTS_DIR


class Unavailable(RuntimeError):
    """What a scenario needs is not installed on this machine: it is skipped, not failed."""


T = TypeVar("T")


def run_async(function: Callable[..., Awaitable[T]], *args: object) -> T:
    """Run `function(*args)` on the server's event loop (asyncio with uvloop)."""
    return anyio.run(function, *args, backend="asyncio", backend_options={"use_uvloop": True})


_OPERATORS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<": operator.lt}


@dataclass(frozen=True)
class Goal:
    """A target for a figure, or for its ratio to the ceiling."""

    op: Literal[">=", "<"]
    target: float
    on: Literal["figure", "ratio"] = "figure"

    def met_by(self, figure: Figure) -> bool | None:
        value = figure.value if self.on == "figure" else figure.ratio
        return None if value is None else _OPERATORS[self.op](value, self.target)

    def __str__(self) -> str:
        prefix = "ratio " if self.on == "ratio" else ""
        return f"{prefix}{self.op} {self.target:,g}"


@dataclass
class Figure:
    """One measured number, with the ceiling it is compared with (if any) and its goal."""

    scenario: str
    metric: str
    value: float
    unit: str
    ceiling: float | None = None
    goal: Goal | None = None
    details: dict[str, Any] = field(default_factory=dict)
    note: str | None = None
    """One line printed under the table."""

    @property
    def ratio(self) -> float | None:
        return self.value / self.ceiling if self.ceiling else None

    @property
    def met(self) -> bool | None:
        return self.goal.met_by(self) if self.goal is not None else None

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "metric": self.metric,
            "value": self.value,
            "unit": self.unit,
            "ceiling": self.ceiling,
            "ratio": self.ratio,
            "goal": str(self.goal) if self.goal is not None else None,
            "met": self.met,
            "note": self.note,
            "details": self.details,
        }
