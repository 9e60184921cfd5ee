"""The throwaway PostgreSQL cluster the integration tests run their postgres variants on."""

from __future__ import annotations

from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.pgcluster import MAX_CONNECTIONS, SUPERUSER, PostgresCluster, PostgresUnavailable


async def test_each_database_is_new_empty_and_usable(postgres_cluster: PostgresCluster) -> None:
    first, second = postgres_cluster.create_database(), postgres_cluster.create_database()
    assert first != second
    for url in (first, second):
        parts = urlsplit(url)
        assert (parts.scheme, parts.username, parts.hostname) == (
            "postgresql",
            SUPERUSER,
            "127.0.0.1",
        )
        assert parts.port == postgres_cluster.port

    connection = await asyncpg.connect(first)
    try:
        tables = await connection.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        )
        assert tables == 0
        await connection.execute("CREATE TABLE t (n integer)")
        await connection.execute("INSERT INTO t VALUES (1), (2)")
        assert await connection.fetchval("SELECT sum(n) FROM t") == 3
        assert await connection.fetchval("SHOW server_encoding") == "UTF8"
    finally:
        await connection.close()

    other = await asyncpg.connect(second)
    try:
        assert await other.fetchval("SELECT to_regclass('t')") is None
    finally:
        await other.close()


def test_the_cluster_is_private_durable_and_roomy(postgres_cluster: PostgresCluster) -> None:
    def show(setting: str) -> str:
        return postgres_cluster.psql(f"SHOW {setting}").strip()

    assert show("listen_addresses") == "127.0.0.1"
    assert show("fsync") == "on"
    assert int(show("max_connections")) == MAX_CONNECTIONS
    assert postgres_cluster.directory is not None
    assert show("unix_socket_directories") == str(postgres_cluster.directory)


def test_stop_removes_everything() -> None:
    try:
        cluster = PostgresCluster().start()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    directory = cluster.directory
    assert directory is not None
    assert directory.is_dir()
    process = cluster.process
    assert process is not None
    cluster.stop()
    assert process.poll() is not None
    assert not directory.exists()
    cluster.stop()  # a second stop does nothing
