"""`python -m bench [--smoke] [--only NAME]...`: run the scenarios, print a table, write JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import (
    http_read,
    http_write,
    log_tools,
    login_load,
    pg_replay,
    pg_write,
    replay,
    store_append,
    timers_scale,
    ws_fanout,
)
from bench.common import RESULTS_DIR, Figure, Options, Unavailable
from bench.pace import Pace

Scenario = Callable[[Options], list[Figure]]

SCENARIOS: dict[str, Scenario] = {
    store_append.NAME: store_append.run,
    replay.NAME: replay.run,
    log_tools.NAME: log_tools.run,
    http_write.NAME: http_write.run,
    http_read.NAME: http_read.run,
    login_load.NAME: login_load.run,
    ws_fanout.NAME: ws_fanout.run,
    timers_scale.NAME: timers_scale.run,
    pg_write.NAME: pg_write.run,
    pg_replay.NAME: pg_replay.run,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks the suite runs, not speed"
    )
    parser.add_argument(
        "--only", action="append", choices=list(SCENARIOS), metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}",
    )  # fmt: skip
    parser.add_argument(
        "--output", type=Path, default=RESULTS_DIR / "latest.json", help="the JSON results file"
    )
    args = parser.parse_args(argv)
    names = args.only or list(SCENARIOS)

    load = _load_average()
    pace = [Pace.now()]
    figures: list[Figure] = []
    failures: dict[str, str] = {}
    skipped: dict[str, str] = {}
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="tracker-bench-") as workdir:
        options = Options(smoke=args.smoke, workdir=Path(workdir))
        for name in names:
            print(f"running {name}...", file=sys.stderr, flush=True)
            started = time.perf_counter()
            try:
                figures += SCENARIOS[name](options)
            except Unavailable as missing:
                skipped[name] = str(missing)
            except Exception as exc:
                traceback.print_exc()
                failures[name] = f"{type(exc).__name__}: {exc}"
            timings[name] = time.perf_counter() - started
    pace.append(Pace.now())

    print(_table(figures))
    print(f"pace at the start: {pace[0]}; at the end: {pace[1]} (see bench.pace)")
    for figure in figures:
        if figure.note:
            print(f"{figure.scenario}: {figure.note}")
    if args.smoke:
        print("(smoke run: tiny sizes and 1 s loads; the figures say nothing about speed)")
    for name, reason in skipped.items():
        print(f"SKIPPED {name}: {reason}")
    for name, error in failures.items():
        print(f"FAILED {name}: {error}")
    report = {
        "smoke": args.smoke,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "load_average_at_start": load,
        "pace": {"start": vars(pace[0]), "end": vars(pace[1])},
        "scenarios": names,
        "scenario_seconds": timings,
        "failures": failures,
        "skipped": skipped,
        "results": [figure.as_json() for figure in figures],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {args.output}")
    return 1 if failures else 0


def _load_average() -> float:
    """The 1-minute load average, with a warning when other work competes for the CPUs."""
    load = os.getloadavg()[0]
    if load > 0.5:
        print(
            f"warning: the 1-minute load average is {load:.2f}; "
            "other work on this machine will lower the figures",
            file=sys.stderr,
        )
    return load


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "git": _git_state(),
    }


def _git_state() -> str:
    """The commit measured, with "+dirty" when the work tree has changes."""
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{commit}+dirty" if dirty else commit or "unknown"


def _table(figures: list[Figure]) -> str:
    header = ("scenario", "metric", "figure", "unit", "ceiling", "ratio", "goal", "met?")
    rows = [header]
    for figure in figures:
        met = {True: "yes", False: "NO", None: "-"}[figure.met]
        rows.append(
            (
                figure.scenario,
                figure.metric,
                _number(figure.value),
                figure.unit,
                _number(figure.ceiling),
                f"{figure.ratio:.2f}" if figure.ratio is not None else "-",
                str(figure.goal) if figure.goal is not None else "-",
                met,
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    numeric = {2, 4, 5}
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.rjust(width) if column in numeric else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


if __name__ == "__main__":
    raise SystemExit(main())
