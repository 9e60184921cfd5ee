"""Shared test settings: every async test runs on asyncio (the backend the server runs on),
and one throwaway PostgreSQL cluster serves every test that asks for a database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pgcluster import PostgresCluster, PostgresUnavailable


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A private PostgreSQL server for the whole run (started on first use, removed at the
    end); `postgres_cluster.create_database()` gives each user a database of its own.
    Skips the test when PostgreSQL is not installed."""
    try:
        cluster = PostgresCluster()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    with cluster:
        yield cluster
