"""pg-replay: rebuilding the read model from a million-event log in PostgreSQL.

The log is eventlog.py's (the SQLite file it caches), copied into a fresh database
of a throwaway cluster every run: the store creates its schema, asyncpg's binary
COPY (`copy_records_to_table`) fills `events` with the very same rows, and the
head row is set to the last position and hash. `VACUUM (ANALYZE)` then leaves the
table as autovacuum would on a server that has been up for a while (hint bits set,
statistics known). Measured, each through its own `PostgresStore.open(url)`:

- the ceiling: `store.replay` with a callback that does nothing, i.e. the reading
  alone (PostgreSQL builds each page as one JSON document, the client decodes it);
- the figure: `ReadModel.build(store)` with no snapshot, as a server's start does.

Both record the CPU of this process and of the cluster meanwhile.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from bench import pg
from bench.common import Figure, Options, run_async
from bench.cpu import CpuSplit, measured, self_seconds
from bench.eventlog import cached_log
from tests.pgcluster import PostgresCluster
from tracker.events.postgres import PostgresStore
from tracker.events.records import Recorded, ReplayRow
from tracker.projections.model import SNAPSHOT_NAME, ReadModel

NAME = "pg-replay"
COLUMNS = list(Recorded.__struct_fields__)
"""The columns of `events`: a `Recorded`'s fields, in order (as the store writes them)."""
COPY_ROWS = 50_000
"""Rows per `copy_records_to_table` call (all in one transaction)."""


def run(options: Options) -> list[Figure]:
    pg.require_driver()
    size = 20_000 if options.smoke else 1_000_000
    started = time.perf_counter()
    cached = cached_log(size, options.cache_dir)
    generated = time.perf_counter() - started
    with pg.cluster() as cluster:
        url = cluster.create_database()
        started = time.perf_counter()
        pg.create_schema(url)
        run_async(_copy_log, cached, url)
        copied = time.perf_counter() - started
        started = time.perf_counter()
        cluster.psql("VACUUM (ANALYZE) events", pg.database_name(url))
        vacuumed = time.perf_counter() - started
        size_query = "SELECT pg_total_relation_size('events')"
        table_bytes = int(cluster.psql(size_query, pg.database_name(url)))
        read_seconds, read_cpu = _timed(cluster, _read_only, url, size)
        build_seconds, build_cpu = _timed(cluster, _build, url, size)
        settings = pg.settings(cluster)
    details = {
        "events": size,
        "postgres": settings,
        "table_bytes": table_bytes,
        "generate_seconds": generated,
        "copy_seconds": copied,
        "vacuum_analyze_seconds": vacuumed,
        "seconds": build_seconds,
        "cpu_cores": build_cpu.as_json(),
        "read_only_seconds": read_seconds,
        "read_only_cpu_cores": read_cpu.as_json(),
    }
    return [
        Figure(
            NAME,
            "full replay (ReadModel.build)",
            size / build_seconds,
            "events/s",
            ceiling=size / read_seconds,
            details=details,
            note=f"replay, {build_cpu.note()}; reading alone, {read_cpu.note()}",
        )
    ]


def _timed(
    cluster: PostgresCluster, work: Callable[[str, int], Awaitable[float]], url: str, size: int
) -> tuple[float, CpuSplit]:
    """`work`'s own timing of itself, and the CPU split over the whole call (opening and
    closing the store included: a few ms)."""

    def postgres() -> float:
        return pg.cpu_seconds(cluster)

    return measured(
        {"bench process": self_seconds, "postgres": postgres},
        lambda: run_async(work, url, size),
    )


async def _copy_log(source: Path, url: str) -> None:
    """The rows of the SQLite log at `source` into the (empty) store at `url`, in one
    transaction with the head row."""
    import asyncpg

    log = sqlite3.connect(f"file:{source}?immutable=1", uri=True)
    connection = await asyncpg.connect(url)
    try:
        rows = log.execute(f"SELECT {', '.join(COLUMNS)} FROM events ORDER BY position")
        last: Any = None
        async with connection.transaction():
            while chunk := rows.fetchmany(COPY_ROWS):
                await connection.copy_records_to_table("events", records=chunk, columns=COLUMNS)
                last = chunk[-1]
            if last is not None:
                await connection.execute(
                    "UPDATE log_head SET position = $1, hash = $2", last[0], last[-1]
                )
    finally:
        await connection.close()
        log.close()


async def _read_only(url: str, size: int) -> float:
    """Seconds to read every replay row, doing nothing with them."""

    def ignore(rows: Iterable[ReplayRow]) -> None:
        pass

    async with PostgresStore.open(url, create=False) as store:
        started = time.perf_counter()
        count = await store.replay(ignore)
        seconds = time.perf_counter() - started
    if count != size:
        raise RuntimeError(f"the replay read {count} events, expected {size}")
    return seconds


async def _build(url: str, size: int) -> float:
    """Seconds to build the read model from the log, with no snapshot."""
    async with PostgresStore.open(url, create=False) as store:
        if await store.load_snapshot(SNAPSHOT_NAME) is not None:
            raise RuntimeError("the fresh log has a snapshot")
        started = time.perf_counter()
        model = await ReadModel.build(store)
        seconds = time.perf_counter() - started
    if model.position != size:
        raise RuntimeError(f"the model is at position {model.position}, expected {size}")
    return seconds
