"""The benchmark suite still runs: `python -m bench --smoke` (tiny sizes, no claims about speed)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = {
    "store-append",
    "replay",
    "log-tools",
    "http-write",
    "http-read",
    "login-load",
    "ws-fanout",
    "timers-scale",
    "pg-write",
    "pg-replay",
}
NEEDS_POSTGRESQL = {"pg-write", "pg-replay"}
"""Reported as skipped, with the reason, on a machine without PostgreSQL."""


@pytest.mark.slow
def test_bench_smoke_reports_every_scenario(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.fail(
            "wrk is not installed: the HTTP benchmarks need it (`apt-get install wrk`)",
            pytrace=False,
        )
    output = tmp_path / "smoke.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--output", str(output)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    report = json.loads(output.read_text())
    assert report["failures"] == {}
    reported = {result["scenario"] for result in report["results"]}
    skipped = set(report["skipped"])
    assert skipped <= NEEDS_POSTGRESQL, report["skipped"]
    assert reported == SCENARIOS - skipped
    for result in report["results"]:
        assert isinstance(result["value"], float | int), result
        assert result["value"] > 0, result
