"""Plain helpers the unit tests share: a fake clock, event records, and log tampering."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import msgspec

from tracker.events import codec
from tracker.events.records import GENESIS_HASH, Recorded, canonical_bytes, chain_hash
from tracker.events.types import BaseEvent

T = TypeVar("T")

START = 1_767_225_600.0
"""2026-01-01T00:00:00Z: where every fake clock starts."""

Row = list[Any]
"""One row of the events table: position, stream, version, type, schema, data, actor, at, hash."""


class FakeClock:
    """A clock that stands still until a test moves it, and a `sleep` that follows it."""

    def __init__(self, now: float = START) -> None:
        self.now = now
        self._moved: anyio.Event | None = None

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        if self._moved is not None:
            self._moved.set()
            self._moved = None

    async def sleep(self, seconds: float) -> None:
        """Return once the clock has been moved `seconds` on."""
        deadline = self.now + seconds
        while self.now < deadline:
            if self._moved is None:
                self._moved = anyio.Event()
            await self._moved.wait()


def record(
    event: BaseEvent,
    *,
    position: int = 1,
    stream: str = "stream-1",
    version: int = 1,
    actor: str = "tester",
    recorded_at: str = "2026-01-01T00:00:00.000Z",
    schema: int | None = None,
    type_: str | None = None,
    previous_hash: str = GENESIS_HASH,
) -> Recorded:
    """The envelope the store would give `event`, with a correctly chained hash."""
    data = codec.encode(event)
    type_ = type_ or type(event).__name__
    schema = event.schema if schema is None else schema
    digest = chain_hash(
        previous_hash,
        canonical_bytes(position, stream, version, type_, schema, data, actor, recorded_at),
    )
    return Recorded(
        position, stream, version, type_, schema, msgspec.Raw(data), actor, recorded_at, digest
    )


async def collect(items: AsyncIterable[T]) -> list[T]:
    """Everything an async iterator yields."""
    return [item async for item in items]


def read_rows(path: Path) -> list[Row]:
    """Every row of a closed log's events table, in position order."""
    with sqlite3.connect(path) as connection:
        return [list(row) for row in connection.execute("SELECT * FROM events ORDER BY position")]


def rewrite_log(path: Path, edit: Callable[[list[Row]], list[Row]]) -> None:
    """Tamper with a closed log: replace its events table by `edit(rows)`."""
    rows = edit(read_rows(path))
    connection = sqlite3.connect(path)
    try:
        with connection:
            connection.execute("DELETE FROM events")
            connection.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    finally:
        connection.close()


def rechain(rows: list[Row]) -> list[Row]:
    """Recompute every hash, as a forger who knows the scheme would."""
    previous = GENESIS_HASH
    for row in rows:
        position, stream, version, type_, schema, data, actor, recorded_at, _ = row
        row[8] = previous = chain_hash(
            previous,
            canonical_bytes(position, stream, version, type_, schema, data, actor, recorded_at),
        )
    return rows
