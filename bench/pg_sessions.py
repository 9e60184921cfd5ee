"""What Tracker's writer sessions do under load, sampled from `pg_stat_activity`.

Every batch an instance commits is one transaction on its writer connection:
BEGIN, take the log's head row (`SELECT ... FOR UPDATE`), [read what other
instances committed], SAVEPOINT, the INSERT, RELEASE, COMMIT, each a round trip.
Sampling the writer sessions every few ms tells where a batch's time goes: in the
database (executing, flushing the WAL, waiting for another instance's head row)
or in Tracker (the session idle in its transaction, waiting for the next
statement). While a writer is in its transaction past the head row, no other
instance can commit: the share of time some writer holds it says how close the
database is to admitting no more commits.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio

from bench.common import run_async
from bench.pg import database_name

INTERVAL = 0.005
"""Seconds between samples (each sample is one query, about 1 ms)."""
_QUERY = """
SELECT pid, state, coalesce(wait_event_type, ''), coalesce(wait_event, ''), left(query, 80)
FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()
"""
Row = tuple[int, str, str, str, str]
"""A session: pid, state, wait event type, wait event, the start of its (last) query."""

HELD = "holding the head row"
STATES = (
    "between batches (idle)",
    "in BEGIN, before the head row",
    "waiting for the head row (another instance holds it)",
    f"{HELD}: waiting for Tracker's next statement",
    f"{HELD}: flushing the WAL",
    f"{HELD}: executing",
)


@contextmanager
def sampling(url: str) -> Iterator[list[list[Row]]]:
    """Sample the sessions on `url`'s database every `INTERVAL` s (in a thread, on its
    own connection) while the block runs; the samples fill the list yielded."""
    samples: list[list[Row]] = []
    stop = threading.Event()
    thread = threading.Thread(target=run_async, args=(_sample, url, stop, samples))
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


async def _sample(url: str, stop: threading.Event, samples: list[list[Row]]) -> None:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        while not stop.is_set():
            rows = await connection.fetch(_QUERY, database_name(url))
            samples.append([(r[0], r[1] or "", r[2], r[3], r[4] or "") for r in rows])
            await anyio.sleep(INTERVAL)
    finally:
        await connection.close()


def writer_states(samples: list[list[Row]]) -> dict[str, Any]:
    """The share of samples each writer session spent in each of `STATES` (averaged over
    the writers), and the share in which some writer held the head row."""
    writers = {
        row[0]
        for rows in samples
        for row in rows
        if "FOR UPDATE" in row[4] or "WITH written" in row[4]
    }
    counts: Counter[str] = Counter()
    held = 0
    for rows in samples:
        states = [_state(row) for row in rows if row[0] in writers]
        counts.update(states)
        held += any(state.startswith(HELD) for state in states)
    total = sum(counts.values())
    return {
        "writers": len(writers),
        "samples": len(samples),
        "head_row_held": round(held / len(samples), 3) if samples else None,
        "writer_states": {state: round(counts[state] / total, 3) for state in STATES}
        if total
        else {},
    }


def _state(row: Row) -> str:
    """Which of `STATES` a writer session is in."""
    _, state, wait_type, wait_event, query = row
    if state == "idle":
        return STATES[0]
    if query.startswith("BEGIN"):
        return STATES[1]
    if wait_type == "Lock":
        return STATES[2]
    if state.startswith("idle in transaction") or wait_type == "Client":
        return STATES[3]
    if wait_event.startswith("WAL"):
        return STATES[4]
    return STATES[5]
