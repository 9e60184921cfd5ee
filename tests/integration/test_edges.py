"""Edges found in review: odd headers, probes, a second writer, a backup that only looks right."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from tests.integration.conftest import (
    Server,
    ServerFactory,
    assert_nothing_written,
    error_of,
    run_cli,
)
from tracker.events import codec
from tracker.events.records import GENESIS_HASH, canonical_bytes, chain_hash
from tracker.events.types import GuestStarted, TaskUpdated


@pytest.mark.parametrize("header", ["Origin", "Referer"])
@pytest.mark.parametrize("value", ["http://[zz/", "http://[::1", "http://", "not a url"])
def test_a_malformed_origin_is_refused_not_a_crash(server: Server, header: str, value: str) -> None:
    with httpx.Client(base_url=server.url) as client:
        response = client.post("/api/auth/guest", headers={header: value})
    error_of(response, 403, "forbidden")


def test_a_head_probe_of_the_board_starts_no_guest(server: Server) -> None:
    with httpx.Client(base_url=server.url) as client:
        before = client.get("/healthz").json()["position"]
        for _ in range(3):
            assert client.head("/").status_code == 200
        assert client.get("/healthz").json()["position"] == before


@pytest.mark.sqlite_only  # one writer per file; PostgreSQL takes several (test_instances.py)
def test_a_second_server_on_the_same_database_is_refused(start_server: Any) -> None:
    first: Server = start_server()
    second: Server = start_server(first.store, start=False)

    with pytest.raises(pytest.fail.Exception, match="in use by another Tracker process"):
        second.start()

    assert first.client().get("/healthz").status_code == 200


def test_a_backup_whose_chain_holds_but_whose_events_do_not_is_refused(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    backup = tmp_path / "crafted.ndjson"
    events = [("principal-g", GuestStarted(principal_id="g")), ("task-t", TaskUpdated(done=True))]
    lines = [json.dumps({"tracker_export": 1, "exported_at": "2026-01-01T00:00:00.000Z"})]
    previous = GENESIS_HASH
    for position, (stream, event) in enumerate(events, start=1):
        data = codec.encode(event)
        at = "2026-01-01T00:00:00.000Z"
        name = type(event).__name__
        previous = chain_hash(
            previous, canonical_bytes(position, stream, 1, name, 1, data, "system", at)
        )
        record = {
            "position": position,
            "stream": stream,
            "version": 1,
            "type": name,
            "schema": 1,
            "data": msgspec.Raw(data),
            "actor": "system",
            "recorded_at": at,
            "hash": previous,
        }
        lines.append(msgspec.json.encode(record).decode())
    lines.append(json.dumps({"end": {"events": 2, "head": 2, "hash": previous}}))
    backup.write_text("\n".join(lines) + "\n")

    restored = start_server.new_store("restored")
    result = run_cli("import", str(backup), db=restored)

    assert result.returncode == 1
    assert b"line 3" in result.stderr
    assert_nothing_written(restored)


def test_export_into_a_missing_directory_fails_cleanly(server: Server, tmp_path: Path) -> None:
    result = run_cli("export", str(tmp_path / "no" / "such" / "dir.ndjson"), db=server.store)

    assert result.returncode == 1
    assert b"No such file or directory" in result.stderr
