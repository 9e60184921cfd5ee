"""timers-scale: startup with 100,000 running timers, and 10,000 of them falling due at once.

The log is written straight into SQLite, its rows computed as the store computes
them (like `eventlog.py`), afresh every run since its due times are relative to
now: one guest per ten tasks, every task with a timer running. Nine tasks of
each guest have one due in a week; the tenth gets one due at the same whole
second a few seconds after the log is written. `tracker serve` starts on it:
the time to /healthz (which answers after replay and scheduling), the scheduling
alone (as the server logs it), the server's RSS (the larger of once ready and
after the burst), then the time from the due second until every due timer has
its `TimerFinished` in the log (read with a read-only sqlite3 connection every
10 ms). Each due timer must finish exactly once, and no other timer may.
"""

from __future__ import annotations

import base64
import math
import random
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from bench.common import Figure, Goal, Options
from bench.eventlog import INSERT, create_empty_log, write_rows
from bench.servers import request, tracker_server
from bench.ws_fanout import log_problems, percentile, rss_kib
from tracker.clock import format_timestamp, parse_timestamp
from tracker.events import codec
from tracker.events.records import GENESIS_HASH, canonical_bytes, chain_hash
from tracker.events.types import BaseEvent, GuestStarted, TaskCreated, TimerStarted
from tracker.projections.board import task_stream
from tracker.projections.identity import principal_stream

NAME = "timers-scale"
FINISH_GOAL = Goal("<", 1.0)
SCHEDULE_GOAL = Goal("<", 1.0)
MEMORY_GOAL = Goal("<", 300)
"""MB of server RSS with 100,000 tasks over 10,000 owners (each task's timer running, too)."""
TASKS_PER_GUEST = 10
LONG_SECONDS = 604_800
DUE_DURATION = 60
"""The due timers started this long before their due second."""
SEED = 20261125
TIMEOUT = 30.0
"""Seconds after the due second to give up waiting for the finishes."""
SETTLE = 1.0
"""Seconds to wait after the last finish for any duplicate to show."""


@dataclass(frozen=True)
class Size:
    timers: int
    lead: float
    """Seconds from writing the due timers to their due second (covers the startup)."""

    @property
    def due(self) -> int:
        return self.timers // TASKS_PER_GUEST


FULL = Size(timers=100_000, lead=6.0)
SMOKE = Size(timers=1_000, lead=1.5)


class _Log:
    """Rows for the `events` table, positions and hash chain computed as the store does."""

    def __init__(self) -> None:
        self.position = 0
        self.previous = GENESIS_HASH

    def row(
        self, stream: str, version: int, event: BaseEvent, actor: str, recorded_at: str
    ) -> tuple[Any, ...]:
        self.position += 1
        data = codec.encode(event)
        type_, schema = type(event).__name__, event.schema
        canonical = canonical_bytes(
            self.position, stream, version, type_, schema, data, actor, recorded_at
        )
        self.previous = chain_hash(self.previous, canonical)
        return (self.position, stream, version, type_, schema, data, actor, recorded_at,
                self.previous)  # fmt: skip


def run(options: Options) -> list[Figure]:
    size = SMOKE if options.smoke else FULL
    db = options.workdir / "timers-scale.db"
    started = time.perf_counter()
    due_second, due_streams, head = _write_log(db, size)
    build_seconds = time.perf_counter() - started
    with tracker_server(db, options.workdir, log_level="info") as server:  # for its timings
        ready_at = time.time()
        rss_ready = rss_kib(server.process.pid)
        probe = _HealthProbe(server.url)
        probe.start()
        try:
            done_at, first, last = _wait_for_finishes(db, head, size.due, due_second)
            time.sleep(SETTLE)
        finally:
            probe.stop()
        finishes = _finishes_per_stream(db, head)
        rss_after = rss_kib(server.process.pid)
    server_log = options.workdir / f"tracker-{server.port}.log"
    problems = log_problems(server_log)
    scheduled, schedule_seconds = _scheduling(server_log)
    if scheduled != size.timers:
        raise RuntimeError(f"the server scheduled {scheduled} timers, not {size.timers}")
    if finishes != dict.fromkeys(due_streams, 1):
        wrong = {stream: count for stream, count in finishes.items() if count != 1}
        others = set(finishes) - set(due_streams)
        missing = set(due_streams) - set(finishes)
        raise RuntimeError(
            f"TimerFinished: {len(missing)} due timers missing, {len(wrong)} streams finished "
            f"more than once, {len(others)} timers not due finished"
        )
    details = {
        "events": head,
        "log_bytes": db.stat().st_size,
        "build_seconds": round(build_seconds, 3),
        "running_timers": size.timers,
        "due_together": size.due,
        "ready_before_due_seconds": round(due_second - ready_at, 3),
        "server_log_problems": problems[:20],
    }
    note = f"{size.due:,} due at once: first recorded +{first * 1000:.0f} ms, "
    note += f"last +{last * 1000:.0f} ms; /healthz meanwhile {probe.summary()}"
    if due_second < ready_at:
        note += "; the server was ready only after the due second"
    if problems:
        note += f"; {len(problems)} warnings/errors in the server log"
    return [
        Figure(
            NAME,
            f"serve start to /healthz, {size.timers:,} running timers",
            server.ready_after,
            "s",
            details=details,
        ),
        Figure(
            NAME,
            f"server RSS, {size.timers:,} tasks of {size.timers // TASKS_PER_GUEST:,} owners",
            max(rss_ready, rss_after) * 1024 / 1e6,
            "MB",
            goal=MEMORY_GOAL,
            details={"ready_kib": rss_ready, "after_burst_kib": rss_after},
        ),
        Figure(
            NAME,
            f"scheduling {size.timers:,} running timers after the replay",
            schedule_seconds,
            "s",
            goal=SCHEDULE_GOAL,
            details={"source": "the server's log line at startup"},
        ),
        Figure(
            NAME,
            f"{size.due:,} due together: all finished after the due second",
            done_at,
            "s",
            goal=FINISH_GOAL,
            details={
                "first_recorded_after_due_s": round(first, 3),
                "last_recorded_after_due_s": round(last, 3),
                "healthz_during_burst_ms": probe.as_json(),
            },
            note=note,
        ),
    ]


def _scheduling(server_log: Path) -> tuple[int, float]:
    """How many running timers the server scheduled at startup, and in how many seconds
    (after the replay), as its log says."""
    found = re.search(r"(\d+) running timers scheduled in ([\d.]+) ms", server_log.read_text())
    if found is None:
        raise RuntimeError(f"{server_log} does not say how the timers were scheduled")
    return int(found[1]), float(found[2]) / 1000


def _write_log(path: Path, size: Size) -> tuple[int, list[str], int]:
    """Write the log; (the due second, the due timers' streams, the head position)."""
    anyio.run(create_empty_log, path)
    rng = random.Random(SEED)
    log = _Log()
    due_tasks: list[tuple[str, str]] = []  # (task id, owner)
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA synchronous = OFF")  # a scratch file
        start = time.time() - 3600  # the bulk of the log was written an hour ago
        write_rows(connection, _bulk(rng, log, size, start, due_tasks))
        # The due timers last, so that their due second is a known time after the writing.
        due_second = math.ceil(time.time() + size.lead)
        at = float(due_second - DUE_DURATION)
        recorded_at = format_timestamp(at)
        connection.execute("BEGIN")
        streams = []
        for task_id, owner in due_tasks:
            event = TimerStarted(
                run=_new_id(rng), duration_seconds=DUE_DURATION, at=at, ends_at=float(due_second)
            )
            streams.append(task_stream(task_id))
            connection.execute(INSERT, log.row(streams[-1], 2, event, owner, recorded_at))
        connection.execute("COMMIT")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    return due_second, streams, log.position


def _bulk(
    rng: random.Random, log: _Log, size: Size, start: float, due_tasks: list[tuple[str, str]]
) -> Iterator[tuple[Any, ...]]:
    """Guests, their tasks and the long timers, one millisecond apart; fills `due_tasks`."""
    for guest_number in range(size.due):
        guest = _new_id(rng)
        moment = start + log.position / 1000
        yield log.row(
            principal_stream(guest), 1, GuestStarted(principal_id=guest), "system",
            format_timestamp(moment),
        )  # fmt: skip
        for number in range(TASKS_PER_GUEST):
            task = _new_id(rng)
            stream = task_stream(task)
            moment = start + log.position / 1000
            title = f"Task {guest_number}.{number}"
            created = TaskCreated(task_id=task, owner=guest, title=title)
            yield log.row(stream, 1, created, guest, format_timestamp(moment))
            if number == 0:
                due_tasks.append((task, guest))
                continue
            moment = start + log.position / 1000
            at = round(moment, 3)
            timer = TimerStarted(
                run=_new_id(rng),
                duration_seconds=LONG_SECONDS,
                at=at,
                ends_at=round(at + LONG_SECONDS, 3),
            )
            yield log.row(stream, 2, timer, guest, format_timestamp(moment))


def _new_id(rng: random.Random) -> str:
    """An id like the service's (16 URL-safe characters), from the seeded generator."""
    return base64.urlsafe_b64encode(rng.randbytes(12)).decode("ascii")


def _read_only(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)


def _wait_for_finishes(
    db: Path, head: int, due: int, due_second: int
) -> tuple[float, float, float]:
    """Poll until `due` TimerFinished follow `head`: (when that was seen, and the first and
    last one's recorded_at, each in seconds after the due second)."""
    query = "SELECT count(*), min(recorded_at), max(recorded_at) FROM events"
    query += " WHERE position > ? AND type = 'TimerFinished'"
    connection = _read_only(db)
    try:
        while True:
            now = time.time()
            count, first, last = connection.execute(query, (head,)).fetchone()
            if count >= due:
                base = format_timestamp(due_second)
                return now - due_second, _seconds(first, base), _seconds(last, base)
            if now > due_second + TIMEOUT:
                raise RuntimeError(f"only {count} of {due} due timers finished in {TIMEOUT} s")
            time.sleep(0.01)
    finally:
        connection.close()


def _seconds(timestamp: str, base: str) -> float:
    """`timestamp - base`, both as `format_timestamp` writes them."""
    return parse_timestamp(timestamp) - parse_timestamp(base)


def _finishes_per_stream(db: Path, head: int) -> dict[str, int]:
    connection = _read_only(db)
    try:
        rows = connection.execute(
            "SELECT stream, count(*) FROM events WHERE position > ? AND type = 'TimerFinished'"
            " GROUP BY stream",
            (head,),
        ).fetchall()
    finally:
        connection.close()
    return dict(rows)


class _HealthProbe(threading.Thread):
    """GET /healthz every 50 ms on a thread, noting how long each answer took."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self._url = url
        self._done = threading.Event()
        self.latencies: list[float] = []

    def run(self) -> None:
        while not self._done.wait(0.05):
            started = time.perf_counter()
            status, _, _ = request(self._url, "GET", "/healthz", timeout=30)
            if status == 200:
                self.latencies.append((time.perf_counter() - started) * 1000)

    def stop(self) -> None:
        self._done.set()
        self.join()

    def as_json(self) -> dict[str, float]:
        if not self.latencies:
            return {}
        return {
            "count": len(self.latencies),
            "p50": round(percentile(self.latencies, 50), 3),
            "max": round(max(self.latencies), 3),
        }

    def summary(self) -> str:
        figures = self.as_json()
        return f"p50 {figures['p50']:.1f} ms, max {figures['max']:.0f} ms" if figures else "-"
