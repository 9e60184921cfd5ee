"""The OpenAPI document: complete, and true of the real server (checked by schemathesis)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.routing import Route

from tests.integration.conftest import Server, ServerFactory
from tracker.http import api, openapi


@pytest.fixture(scope="module")
def server(module_servers: ServerFactory) -> Server:
    return module_servers(TRACKER_BCRYPT_ROUNDS="4")


def test_every_api_route_is_documented() -> None:
    routes = {
        (method.lower(), route.path)
        for route in api.ROUTES
        if isinstance(route, Route) and route.path.startswith("/api/")
        for method in route.methods or ()
        if method != "HEAD"
    }
    documented = {(operation.method, operation.path) for operation in openapi.OPERATIONS}
    assert routes == documented


def test_the_document_is_openapi_3_1_with_every_schema_it_refers_to(server: Server) -> None:
    response = server.client().get("/api/openapi.json")

    assert response.status_code == 200
    document = response.json()
    assert document["openapi"] == "3.1.0"
    schemas = document["components"]["schemas"]
    for name in ("Task", "Timer", "TaskList", "AuthResult", "Principal", "ErrorBody"):
        assert name in schemas
    text = response.text
    for reference in {part.split('"')[0] for part in text.split("#/components/schemas/")[1:]}:
        assert reference in schemas


def test_a_created_task_links_to_every_operation_on_one_task(server: Server) -> None:
    document = server.client().get("/api/openapi.json").json()
    links = document["paths"]["/api/tasks"]["post"]["responses"]["201"]["links"]

    targets = {
        (link["operationRef"].rsplit("/", 1)[1], link["operationRef"].rsplit("/", 1)[0])
        for link in links.values()
    }
    expected = {
        (operation.method, "#/paths/" + operation.path.replace("/", "~1"))
        for operation in openapi.OPERATIONS
        if "{task_id}" in operation.path
    }
    assert targets == expected
    assert {str(link["parameters"]) for link in links.values()} == {
        "{'task_id': '$response.body#/id'}"
    }


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_response_off_the_schema(
    server: Server, tmp_path: Path
) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is part of the test extra"
    registered = server.client().post(
        "/api/auth/register", json={"username": "schemathesis", "password": "long enough"}
    )
    token = registered.json()["access_token"]

    # With the links in the document, its stateful phase chains real calls on one task.
    result = subprocess.run(
        [
            st, "run", f"{server.url}/api/openapi.json",
            "--header", f"Authorization: Bearer {token}",
            # Logging out would revoke the token every other operation is tested with.
            "--exclude-path", "/api/auth/logout",
            "--checks", "not_a_server_error,status_code_conformance,"
            "content_type_conformance,response_schema_conformance",
            "--max-examples", "30",
            "--seed", "1",
        ],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout[-6000:]
    assert "Traceback" not in server.log()


def test_the_api_page_shows_every_operation_and_schema(server: Server) -> None:
    page = server.client().get("/docs")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for operation in openapi.OPERATIONS:
        assert f"<code>{operation.path}</code>" in page.text
    assert 'id="schema-Task"' in page.text
    assert "cdn" not in page.text.lower()
