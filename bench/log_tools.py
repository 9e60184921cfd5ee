"""log-tools: `tracker verify`, `replay` and `export` over a large log, as a user runs them.

Each command runs as its own process on a private copy of a generated (cached)
log. For each: events per second over the whole run (process start included) on
the large log (one task per ten events), and the process's peak RSS on a log of a
quarter of its size and on one as long as it with the same tasks. Memory must not
grow with the log: the commands stream it, so their peak is what the projections
hold (the state, which these two logs share) plus a constant.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench.common import Figure, Goal, Options
from bench.eventlog import cached_log, copy_log

NAME = "log-tools"
SPEED_GOAL = Goal(">=", 300_000)
FLAT_GOAL = Goal("<", 1.25)
"""A command's peak RSS on the long log over that on the small one (the same tasks)."""
FULL_SIZES = (250_000, 1_000_000)
SMOKE_SIZES = (5_000, 20_000)
COMMANDS = ("verify", "replay", "export")


def run(options: Options) -> list[Figure]:
    small, large = SMOKE_SIZES if options.smoke else FULL_SIZES
    tasks = small // 10  # the small log's, kept by the long one
    figures: list[Figure] = []
    logs = {"large": cached_log(large, options.cache_dir)}
    logs["small"] = cached_log(small, options.cache_dir, tasks)
    logs["long"] = cached_log(large, options.cache_dir, tasks)
    results: dict[tuple[str, str], tuple[float, int]] = {}
    for log, cached in logs.items():
        db = options.workdir / f"log-{log}.db"
        copy_log(cached, db)
        for command in COMMANDS:
            results[command, log] = _run_command(command, db, options.workdir)
        db.unlink()
    for command in COMMANDS:
        seconds, peak = results[command, "large"]
        figures.append(
            Figure(
                NAME,
                f"{command} of {large:,} events",
                large / seconds,
                "events/s",
                goal=SPEED_GOAL if command in ("verify", "replay") else None,
                details={"seconds": seconds, "peak_rss_mb": peak / 1024},
            )
        )
    for command in COMMANDS:
        small_peak, long_peak = results[command, "small"][1], results[command, "long"][1]
        figures.append(
            Figure(
                NAME,
                f"{command} peak RSS, {large:,} / {small:,} events of {tasks:,} tasks",
                long_peak / small_peak,
                "x",
                goal=FLAT_GOAL,
                details={
                    "peak_rss_mb_small": small_peak / 1024,
                    "peak_rss_mb_long": long_peak / 1024,
                },
            )
        )
    return figures


def _run_command(command: str, db: Path, workdir: Path) -> tuple[float, int]:
    """Run `tracker COMMAND` on `db`; its wall seconds and peak RSS (KiB: the command's
    own process, not the worker that `verify` checks the chain in)."""
    peak = workdir / "peak-rss"
    args = [sys.executable, "-m", "bench.peak", str(peak), "-m", "tracker", command]
    args += ["--db", str(db)]
    if command == "export":
        backup = workdir / "backup.ndjson"
        backup.unlink(missing_ok=True)
        args.append(str(backup))
    started = time.perf_counter()
    finished = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        raise RuntimeError(f"tracker {command} failed: {finished.stderr.decode(errors='replace')}")
    return seconds, int(peak.read_text())
