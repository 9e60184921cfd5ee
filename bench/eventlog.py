"""A large, valid event log written straight into SQLite, cached between runs.

Going through the store (let alone HTTP) would take minutes for a million
events; the rows are computed here exactly as the store computes them
(positions, per-stream versions, `codec.encode`, the hash chain) and inserted in
big transactions into a file the store itself created. The mix: one guest per
100 events, one new task per 10, the rest edits of existing tasks, shuffled
with a fixed seed (a guest exists before its tasks, a task before its edits).
"""

from __future__ import annotations

import base64
import os
import random
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio

from tracker.clock import format_timestamp
from tracker.events import codec
from tracker.events.records import GENESIS_HASH, canonical_bytes, chain_hash
from tracker.events.sqlite import SQLiteStore
from tracker.events.types import BaseEvent, GuestStarted, TaskCreated, TaskUpdated
from tracker.projections.board import task_stream
from tracker.projections.identity import principal_stream

GENERATOR_VERSION = 1
"""Bump when the generated log changes, so stale cached files are not reused."""
SEED = 20261124
START = 1_795_000_000.0
"""recorded_at of the first event (epoch seconds); each batch of 100 is 50 ms later."""
BATCH = 100
TRANSACTION = 100_000


def cached_log(size: int, cache_dir: Path, tasks: int | None = None) -> Path:
    """The path of a log of `size` events, generating it first if it is not cached. It
    holds one guest per ten of its `tasks` (by default, one task per ten events)."""
    if tasks == size // 10:
        tasks = None
    name = f"eventlog-{size}" + (f"-{tasks}-tasks" if tasks is not None else "")
    path = cache_dir / f"{name}-v{GENERATOR_VERSION}.db"
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        for leftover in (partial, *_sidecars(partial)):
            leftover.unlink(missing_ok=True)
        generate(partial, size, tasks)
        partial.rename(path)
    return path


def copy_log(source: Path, target: Path) -> None:
    """A private copy of a cached log, so a run never changes the cache."""
    shutil.copyfile(source, target)


def generate(path: Path, size: int, tasks: int | None = None) -> None:
    """Write a log of `size` events (with `tasks` tasks) into the new file `path`."""
    anyio.run(create_empty_log, path)
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA synchronous = OFF")  # a cache: durability does not matter
        write_rows(connection, _rows(size, size // 10 if tasks is None else tasks))
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()


INSERT = (
    "INSERT INTO events (position, stream, version, type, schema, data, actor, recorded_at, hash)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def write_rows(connection: sqlite3.Connection, rows: Iterator[tuple[Any, ...]]) -> None:
    """Insert event rows `TRANSACTION` at a time (the connection is in autocommit mode)."""
    while True:
        connection.execute("BEGIN")
        chunk = [row for _, row in zip(range(TRANSACTION), rows, strict=False)]
        connection.executemany(INSERT, chunk)
        connection.execute("COMMIT")
        if len(chunk) < TRANSACTION:
            return


def _rows(size: int, tasks: int) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(SEED)
    guests = max(1, tasks // 10)
    tasks = max(1, min(size - guests, tasks))
    kinds = ["C"] * (tasks - 1) + ["U"] * (size - guests - tasks) + ["G"] * (guests - 1)
    rng.shuffle(kinds)
    kinds = ["G", "C", *kinds][:size]

    guest_ids: list[str] = []
    task_ids: list[str] = []
    task_owners: list[str] = []
    task_versions: list[int] = []
    previous = GENESIS_HASH
    recorded_at = ""
    for position, kind in enumerate(kinds, start=1):
        if position % BATCH == 1:
            recorded_at = format_timestamp(START + (position // BATCH) * 0.05)
        event: BaseEvent
        if kind == "G":
            actor = "system"
            guest = _new_id(rng)
            guest_ids.append(guest)
            stream, version, event = principal_stream(guest), 1, GuestStarted(principal_id=guest)
        elif kind == "C":
            actor = rng.choice(guest_ids)
            task = _new_id(rng)
            task_ids.append(task)
            task_owners.append(actor)
            task_versions.append(1)
            event = TaskCreated(task_id=task, owner=actor, title=f"Task {len(task_ids)}")
            stream, version = task_stream(task), 1
        else:
            index = rng.randrange(len(task_ids))
            task_versions[index] += 1
            actor, version = task_owners[index], task_versions[index]
            stream, event = task_stream(task_ids[index]), _edit(rng, version)
        data = codec.encode(event)
        type_, schema = type(event).__name__, event.schema
        canonical = canonical_bytes(
            position, stream, version, type_, schema, data, actor, recorded_at
        )
        previous = chain_hash(previous, canonical)
        yield (position, stream, version, type_, schema, data, actor, recorded_at, previous)


def _edit(rng: random.Random, version: int) -> TaskUpdated:
    choice = rng.random()
    if choice < 0.5:
        return TaskUpdated(title=f"Renamed {version}")
    if choice < 0.8:
        return TaskUpdated(done=version % 2 == 0)
    return TaskUpdated(notes=f"Notes of version {version}: " + "lorem ipsum " * rng.randrange(8))


def _new_id(rng: random.Random) -> str:
    """An id like the service's (16 URL-safe characters), from the seeded generator."""
    return base64.urlsafe_b64encode(rng.randbytes(12)).decode("ascii")


def _sidecars(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]


async def create_empty_log(path: Path) -> None:
    """A new log with the store's own schema and settings."""
    async with SQLiteStore.open(path):
        pass
