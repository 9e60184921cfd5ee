"""A throwaway PostgreSQL cluster for one scenario (tests/pgcluster.py's), durable like a
production server's defaults, and what the PostgreSQL scenarios need beside it.

A machine without PostgreSQL's server programs, or without asyncpg, skips these
scenarios (`Unavailable`) rather than failing the suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from bench.common import Unavailable, run_async
from bench.cpu import tree_seconds
from tests.pgcluster import PostgresCluster, PostgresUnavailable
from tracker.events.postgres import PostgresStore

DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
"""The settings that make a commit durable: PostgreSQL's defaults, checked before measuring."""
REPORTED = ("server_version", "wal_sync_method", "shared_buffers", "max_connections", *DURABLE)


def require_driver() -> None:
    """Fail with `Unavailable` unless asyncpg (the store's optional driver) is installed."""
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        raise Unavailable(
            "asyncpg is not installed: pip install -e '.[postgres]' (or '.[test]')"
        ) from None


@contextmanager
def cluster(*, tools: tuple[str, ...] = ()) -> Iterator[PostgresCluster]:
    """A new cluster, started, with durable commits; stopped (and its files deleted) on
    leaving. `tools`: programs of PostgreSQL's bin directory the scenario also runs."""
    try:
        server = PostgresCluster()
    except PostgresUnavailable as exc:
        raise Unavailable(str(exc)) from None
    for tool in tools:
        if not (server.bindir / tool).is_file():
            raise Unavailable(f"{server.bindir} has no {tool}")
    server.start()
    try:
        found = settings(server)
        wrong = {name: found[name] for name, value in DURABLE.items() if found[name] != value}
        if wrong:
            raise RuntimeError(f"the cluster does not commit durably: {wrong}")
        yield server
    finally:
        server.stop()


def settings(server: PostgresCluster) -> dict[str, str]:
    """The cluster's settings worth reporting beside its figures."""
    values = ", ".join(f"current_setting('{name}')" for name in REPORTED)
    row = server.psql(f"SELECT {values}").strip().split("|")
    return dict(zip(REPORTED, row, strict=True))


def cpu_seconds(server: PostgresCluster) -> float:
    """CPU time of the whole cluster so far: the postmaster and every backend (live or
    ended), background processes included."""
    assert server.process is not None, "the cluster is not running"
    return tree_seconds(server.process.pid)


def database_name(url: str) -> str:
    """The database a cluster URL names."""
    return urlsplit(url).path.lstrip("/")


def create_schema(url: str) -> None:
    """Tracker's schema in the empty database at `url`, as the store itself creates it."""
    run_async(_open_once, url)


async def _open_once(url: str) -> None:
    async with PostgresStore.open(url):
        pass
