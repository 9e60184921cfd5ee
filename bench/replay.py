"""replay: rebuilding the read model from a large log, with and without a snapshot.

On a private copy of a generated (cached) log: a full replay from an empty
snapshot, then startup from a saved snapshot, then the time from starting a
`tracker serve` process on that log to /healthz answering.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.common import Figure, Goal, Options, run_async
from bench.eventlog import cached_log, copy_log
from bench.servers import request, tracker_server
from tracker.events.sqlite import SQLiteStore
from tracker.projections.model import ReadModel

NAME = "replay"
REPLAY_GOAL = Goal(">=", 300_000)
SNAPSHOT_GOAL = Goal("<", 0.5)


def run(options: Options) -> list[Figure]:
    size = 20_000 if options.smoke else 1_000_000
    started = time.perf_counter()
    cached = cached_log(size, options.cache_dir)
    prepared = time.perf_counter() - started
    db = options.workdir / "replay.db"
    copy_log(cached, db)
    replay_seconds, snapshot_bytes = run_async(_full_replay, db, size)
    snapshot_seconds = run_async(_snapshot_startup, db, size)
    with tracker_server(db, options.workdir) as server:
        serve_seconds = server.ready_after
        _, _, health = request(server.url, "GET", "/healthz")
    log = {"events": size, "log_bytes": cached.stat().st_size, "prepare_seconds": prepared}
    return [
        Figure(
            NAME,
            "full replay",
            size / replay_seconds,
            "events/s",
            goal=REPLAY_GOAL,
            details={**log, "seconds": replay_seconds},
        ),
        Figure(
            NAME,
            "startup from snapshot",
            snapshot_seconds,
            "s",
            goal=SNAPSHOT_GOAL,
            details={"snapshot_bytes": snapshot_bytes},
        ),
        Figure(
            NAME,
            "serve start to /healthz",
            serve_seconds,
            "s",
            details={"healthz": health.decode(errors="replace")},
        ),
    ]


async def _full_replay(db: Path, size: int) -> tuple[float, int]:
    """Seconds to build the model with no snapshot; then save one (returns its size)."""
    async with SQLiteStore.open(db, create=False) as store:
        await store.delete_snapshots()
        started = time.perf_counter()
        model = await ReadModel.build(store)
        seconds = time.perf_counter() - started
        _check(model, size)
        snapshot = await model.save_snapshot(store)
        assert snapshot is not None
        return seconds, len(snapshot.data)


async def _snapshot_startup(db: Path, size: int) -> float:
    """Seconds to build the model when the snapshot is at the head of the log."""
    async with SQLiteStore.open(db, create=False) as store:
        started = time.perf_counter()
        model = await ReadModel.build(store)
        seconds = time.perf_counter() - started
        _check(model, size)
        return seconds


def _check(model: ReadModel, size: int) -> None:
    if model.position != size:
        raise RuntimeError(f"the model is at position {model.position}, expected {size}")
