"""store-append: durable appends per second through SQLiteStore, many appenders at once.

Each of `APPENDERS` tasks loops `await store.append(stream, version, [event], actor)`
on its own stream, so the group-committing writer sees up to `APPENDERS` appends
per batch. The ceiling is plain sqlite3 writing the very same rows into the same
schema (WAL, synchronous=FULL), one transaction per `APPENDERS` rows: the cost of
the inserts and fsyncs alone, without the store around them.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio

from bench.common import Figure, Goal, Options, run_async
from bench.eventlog import create_empty_log
from tracker.events.sqlite import SQLiteStore
from tracker.events.types import BaseEvent, TaskCreated, TaskUpdated
from tracker.projections.board import task_stream

NAME = "store-append"
APPENDERS = 100
GOAL = Goal(">=", 50_000)


def run(options: Options) -> list[Figure]:
    per_appender = 5 if options.smoke else 1_000
    store_db = options.workdir / "append-store.db"
    batches: list[int] = []
    elapsed = run_async(_append_all, store_db, per_appender, batches)
    rows = _read_rows(store_db)
    total = APPENDERS * per_appender
    if len(rows) != total:
        raise RuntimeError(f"the store holds {len(rows)} events, expected {total}")
    ceiling_elapsed = _plain_inserts(options.workdir / "append-plain.db", rows)
    return [
        Figure(
            NAME,
            "durable appends",
            total / elapsed,
            "events/s",
            ceiling=total / ceiling_elapsed,
            goal=GOAL,
            details={
                "appenders": APPENDERS,
                "events": total,
                "seconds": elapsed,
                "ceiling_seconds": ceiling_elapsed,
                "commits": len(batches),
                "mean_batch": total / len(batches),
            },
        )
    ]


def _event(appender: int, version: int) -> BaseEvent:
    if version == 0:
        return TaskCreated(task_id=f"bench-{appender}", owner="owner", title="bench")
    return TaskUpdated(title=f"bench {version}")


async def _append_all(path: Path, per_appender: int, batches: list[int]) -> float:
    """Run the appenders; return the seconds they took. `batches` gets every commit's size."""
    async with SQLiteStore.open(path) as store:
        store.add_listener(lambda records: batches.append(len(records)))

        async def appender(index: int) -> None:
            stream = task_stream(f"bench-{index}")
            for version in range(per_appender):
                await store.append(stream, version, [_event(index, version)], "owner")

        started = time.perf_counter()
        async with anyio.create_task_group() as tasks:
            for index in range(APPENDERS):
                tasks.start_soon(appender, index)
        return time.perf_counter() - started


def _read_rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT * FROM events ORDER BY position").fetchall()


def _plain_inserts(path: Path, rows: list[tuple[Any, ...]]) -> float:
    anyio.run(create_empty_log, path)
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
        insert = f"INSERT INTO events VALUES ({', '.join('?' * len(rows[0]))})"
        started = time.perf_counter()
        for start in range(0, len(rows), APPENDERS):
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(insert, rows[start : start + APPENDERS])
            connection.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        connection.close()
