"""log-tools: `tracker verify`, `replay` and `export` over a large log, as a user runs them.

Each command runs as its own process on a private copy of a generated (cached)
log, at two sizes. For each: events per second over the whole run (process start
included) and the process's peak RSS. Memory must not grow with the log: the
commands stream it, so their peak is what the projections hold (one task per ten
events in the generated log) plus a constant, and export, which holds no
projection, stays flat.
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
"""Export's peak RSS on the large log over that on the small one."""
FULL_SIZES = (250_000, 1_000_000)
SMOKE_SIZES = (5_000, 20_000)


def run(options: Options) -> list[Figure]:
    small, large = SMOKE_SIZES if options.smoke else FULL_SIZES
    figures: list[Figure] = []
    peaks: dict[tuple[str, int], int] = {}
    for size in (small, large):
        db = options.workdir / f"log-{size}.db"
        copy_log(cached_log(size, options.cache_dir), db)
        for command in ("verify", "replay", "export"):
            seconds, peak = _run_command(command, db, options.workdir)
            peaks[command, size] = peak
            if size == large:
                figures.append(
                    Figure(
                        NAME,
                        f"{command} of {size:,} events",
                        size / seconds,
                        "events/s",
                        goal=SPEED_GOAL if command in ("verify", "replay") else None,
                        details={
                            "seconds": seconds,
                            "peak_rss_mb": peak / 1024,
                            f"peak_rss_mb_at_{small}": peaks[command, small] / 1024,
                        },
                    )
                )
        db.unlink()
    for command in ("verify", "replay", "export"):
        figures.append(
            Figure(
                NAME,
                f"{command} peak RSS at {large:,} / at {small:,} events",
                peaks[command, large] / peaks[command, small],
                "x",
                goal=FLAT_GOAL if command == "export" else None,
                details={
                    "peak_rss_mb_small": peaks[command, small] / 1024,
                    "peak_rss_mb_large": peaks[command, large] / 1024,
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
