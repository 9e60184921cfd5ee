"""pg-write's ceiling: pgbench committing one-row INSERTs into a table shaped like
Tracker's log, on the same cluster, with as many client connections as wrk has.

Each transaction inserts one event row (a `TaskCreated` of a new task stream, with
a real encoded body and a 64-character hash) into Tracker's own `events` table,
created by the store in a fresh database; positions come from a sequence. It is
the durable commit rate the database allows on this machine, with no
application around it: no HTTP, no read model, no head row to take, no batching.
"""

from __future__ import annotations

import hashlib
import os
import re
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.pg import create_schema, database_name
from bench.ws_fanout import percentile
from tests.pgcluster import SUPERUSER, PostgresCluster
from tracker.clock import format_timestamp
from tracker.events import codec
from tracker.events.types import TaskCreated
from tracker.projections.board import TASK_STREAM_PREFIX

SEQUENCE = "bench_positions"


@dataclass(frozen=True)
class PgbenchResult:
    transactions_per_second: float
    transactions: int
    seconds: float
    """Of the transactions, after the clients connected (as pgbench counts its tps)."""
    p50_ms: float
    p99_ms: float
    clients: int
    threads: int

    def as_json(self) -> dict[str, Any]:
        return {
            "transactions_per_second": self.transactions_per_second,
            "transactions": self.transactions,
            "seconds": round(self.seconds, 3),
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "clients": self.clients,
            "threads": self.threads,
        }


def prepare(server: PostgresCluster, url: str, workdir: Path) -> Path:
    """Tracker's schema and a position sequence in the fresh database at `url`; the
    path of the pgbench script."""
    create_schema(url)
    server.psql(f"CREATE SEQUENCE {SEQUENCE}", database_name(url))
    event = TaskCreated(task_id="T" * 16, owner="G" * 16, title="bench")
    values = [
        "p",
        f"'{TASK_STREAM_PREFIX}' || lpad(p::text, 16, '0')",
        "1",
        f"'{type(event).__name__}'",
        str(event.schema),
        f"'\\x{codec.encode(event).hex()}'::bytea",
        "'" + "G" * 16 + "'",
        f"'{format_timestamp(time.time())}'",
        f"'{hashlib.sha256(b'bench').hexdigest()}'",
    ]
    script = workdir / "pgbench-insert.sql"
    script.write_text(
        "INSERT INTO events (position, stream, version, type, schema, data, actor,"
        f" recorded_at, hash) SELECT {', '.join(values)} FROM nextval('{SEQUENCE}') AS p;\n"
    )
    return script


def run_pgbench(
    server: PostgresCluster,
    url: str,
    script: Path,
    *,
    clients: int,
    threads: int,
    seconds: int,
    log_prefix: Path,
) -> PgbenchResult:
    """`pgbench` for `seconds` on `script` (prepared statements, no vacuum); refuse a run
    with any failed transaction. Latencies come from its per-transaction log."""
    argv = [str(server.bindir / "pgbench"), "-n", "-M", "prepared", f"-f{script}"]
    argv += [f"-c{clients}", f"-j{threads}", f"-T{seconds}", "-l", f"--log-prefix={log_prefix}"]
    argv += ["-h", "127.0.0.1", "-p", str(server.port), "-U", SUPERUSER, database_name(url)]
    completed = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
        cwd=log_prefix.parent,
        env=_client_env(),
    )
    if completed.returncode != 0:
        raise RuntimeError(f"pgbench failed ({completed.returncode}): {completed.stderr.strip()}")
    output = completed.stdout
    transactions = int(_field(output, r"number of transactions actually processed: (\d+)"))
    failed = _field(output, r"number of failed transactions: (\d+)", default="0")
    if int(failed):
        raise RuntimeError(f"pgbench saw {failed} failed transactions:\n{output}")
    tps = float(_field(output, r"tps = ([\d.]+) \(without initial connection time\)"))
    latencies = _logged_latencies_ms(log_prefix)
    if len(latencies) != transactions:
        raise RuntimeError(f"pgbench logged {len(latencies)} transactions of {transactions}")
    return PgbenchResult(
        transactions_per_second=tps,
        transactions=transactions,
        seconds=transactions / tps,
        p50_ms=statistics.median(latencies),
        p99_ms=percentile(latencies, 99),
        clients=clients,
        threads=threads,
    )


def combined(rounds: Sequence[PgbenchResult]) -> PgbenchResult:
    """Several runs as one: the rate over their whole time, the median p50, the worst p99."""
    transactions = sum(result.transactions for result in rounds)
    seconds = sum(result.seconds for result in rounds)
    return PgbenchResult(
        transactions_per_second=transactions / seconds,
        transactions=transactions,
        seconds=seconds,
        p50_ms=statistics.median(result.p50_ms for result in rounds),
        p99_ms=max(result.p99_ms for result in rounds),
        clients=rounds[0].clients,
        threads=rounds[0].threads,
    )


def _field(output: str, pattern: str, default: str | None = None) -> str:
    found = re.search(pattern, output)
    if found is not None:
        return found.group(1)
    if default is not None:
        return default
    raise RuntimeError(f"pgbench printed no {pattern!r}:\n{output}")


def _logged_latencies_ms(log_prefix: Path) -> list[float]:
    """Every transaction's latency from the log files pgbench wrote (one per thread:
    `<prefix>.<pid>[.<thread>]`, third column in µs); the files are removed."""
    latencies: list[float] = []
    for log in sorted(log_prefix.parent.glob(f"{log_prefix.name}.*")):
        for line in log.read_text().splitlines():
            latencies.append(int(line.split()[2]) / 1000)
        log.unlink()
    return latencies


def _client_env() -> dict[str, str]:
    """The environment without libpq's PG* settings, which would override the arguments."""
    return {name: value for name, value in os.environ.items() if not name.startswith("PG")}
