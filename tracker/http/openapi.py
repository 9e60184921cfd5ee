"""The OpenAPI 3.1 document of the JSON API, built from the Structs the endpoints use.

Request schemas are the very Structs that decode request bodies, and response
schemas the Structs that encode answers, so the document cannot drift from the
code. `OPERATIONS` names every `/api` route; a test holds it to `api.ROUTES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tracker import __version__
from tracker.auth import Principal
from tracker.domain import CreateTask, Credentials, NewCredentials, StartTimer, UpdateTask
from tracker.http.api import AuthResult, EventList, EventPage, Health
from tracker.http.errors import ErrorBody
from tracker.http.task_lists import TaskList
from tracker.projections.board import Task

REF = "#/components/schemas/{name}"


@dataclass(frozen=True)
class Operation:
    """One endpoint: what it takes and what it answers."""

    method: str
    path: str
    summary: str
    body: type | None = None
    answers: dict[int, type | None] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    authenticated: bool = True
    parameters: tuple[dict[str, Any], ...] = ()


_TASK_ID = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
}
_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": 'Only if the task is still at this version, e.g. "3" (else 412).',
    "schema": {"type": "string"},
}
_AS_OF = {
    "name": "as_of",
    "in": "query",
    "required": False,
    "description": "The tasks as they stood right after this global event position.",
    "schema": {"type": "integer", "minimum": 0},
}

_EVENT_FILTERS = (
    {"name": "after", "in": "query", "required": False,
     "description": "Only events after this global position (the previous page's next_after).",
     "schema": {"type": "integer", "minimum": 0}},
    {"name": "limit", "in": "query", "required": False,
     "description": "At most this many events (default 100; NDJSON: all unless given).",
     "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
    {"name": "type", "in": "query", "required": False,
     "description": "Only events of this type (e.g. TimerFinished).",
     "schema": {"type": "string"}},
    {"name": "stream", "in": "query", "required": False,
     "description": "Only events of this stream (e.g. task-<id>).",
     "schema": {"type": "string"}},
)  # fmt: skip

OPERATIONS: tuple[Operation, ...] = (
    Operation("post", "/api/auth/guest", "Start a guest session", None, {201: AuthResult},
              authenticated=False),
    Operation("post", "/api/auth/register", "Create an account (claiming the guest's tasks)",
              NewCredentials, {201: AuthResult}, (409, 422), authenticated=False),
    Operation("post", "/api/auth/login", "Log in", Credentials, {200: AuthResult},
              (401, 422, 429), authenticated=False),
    Operation("post", "/api/auth/logout", "Log out: revoke this token", None, {204: None},
              (401,)),
    Operation("get", "/api/auth/me", "Who the credentials belong to", None, {200: Principal},
              (401,)),
    Operation("get", "/api/tasks", "Your tasks, oldest first", None, {200: TaskList}, (400, 401),
              parameters=(_AS_OF,)),
    Operation("post", "/api/tasks", "Create a task", CreateTask, {201: Task}, (401, 422)),
    Operation("get", "/api/tasks/{task_id}", "One task", None, {200: Task}, (401, 404),
              parameters=(_TASK_ID,)),
    Operation("patch", "/api/tasks/{task_id}", "Change a task", UpdateTask, {200: Task},
              (401, 404, 412, 422), parameters=(_TASK_ID, _IF_MATCH)),
    Operation("delete", "/api/tasks/{task_id}", "Delete a task", None, {204: None},
              (401, 404, 412), parameters=(_TASK_ID, _IF_MATCH)),
    Operation("get", "/api/tasks/{task_id}/history", "A task's events, also once deleted", None,
              {200: EventList}, (401, 404), parameters=(_TASK_ID,)),
    Operation("get", "/api/events",
              "Your events in log order (admins: every event); Accept application/x-ndjson "
              "streams them all", None, {200: EventPage}, (400, 401), parameters=_EVENT_FILTERS),
    Operation("post", "/api/tasks/{task_id}/timer/start", "Start a countdown (a new run)",
              StartTimer, {200: Task}, (401, 404, 409, 422), parameters=(_TASK_ID,)),
    Operation("post", "/api/tasks/{task_id}/timer/pause", "Pause the running countdown", None,
              {200: Task}, (401, 404, 409), parameters=(_TASK_ID,)),
    Operation("post", "/api/tasks/{task_id}/timer/resume", "Resume the paused countdown", None,
              {200: Task}, (401, 404, 409), parameters=(_TASK_ID,)),
    Operation("post", "/api/tasks/{task_id}/timer/stop", "Stop the countdown", None,
              {200: Task}, (401, 404, 409), parameters=(_TASK_ID,)),
)  # fmt: skip

_REASONS = {
    200: "OK",
    201: "Created",
    204: "No content",
    400: "Bad request",
    401: "Missing, expired, revoked or forged credentials",
    403: "Refused: a cookie-authenticated request from another site (CSRF)",
    404: "No such task (or another owner's)",
    409: "Conflict (a taken username, or a timer in the wrong state)",
    412: "If-Match does not match the current version",
    413: "Body over 64 KiB",
    415: "Body is not application/json",
    422: "Validation error",
    429: "Too many failed attempts (see Retry-After)",
    503: "Storage unavailable",
}


@cache
def document() -> bytes:
    """The OpenAPI document, encoded once."""
    types: set[type] = {ErrorBody, Health}
    for operation in OPERATIONS:
        if operation.body is not None:
            types.add(operation.body)
        types.update(answer for answer in operation.answers.values() if answer is not None)
    _, components = msgspec.json.schema_components(sorted(types, key=str), ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for operation in OPERATIONS:
        paths.setdefault(operation.path, {})[operation.method] = _operation(operation)
    return msgspec.json.encode(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "Tracker",
                "version": __version__,
                "description": "Tasks with live countdown timers, on an append-only event log.",
            },
            "paths": paths,
            "components": {
                "schemas": components,
                "securitySchemes": {
                    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                    "cookie": {"type": "apiKey", "in": "cookie", "name": "tracker_session"},
                },
            },
        }
    )


def _operation(operation: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, answer in operation.answers.items():
        responses[str(status)] = _response(status, answer)
        if answer is Task:
            responses[str(status)]["links"] = _task_links()
    edge = (400, 413, 415) if operation.body is not None else ()
    csrf = (403,) if operation.method != "get" else ()  # a cookie from another site's page
    for status in sorted({*operation.errors, *edge, *csrf, 503}):
        responses[str(status)] = _response(status, ErrorBody)
    result: dict[str, Any] = {"summary": operation.summary, "responses": responses}
    if operation.parameters:
        result["parameters"] = list(operation.parameters)
    if operation.body is not None:
        result["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(operation.body)}},
        }
    result["security"] = [{"bearer": []}, {"cookie": []}] if operation.authenticated else []
    return result


@cache
def _task_links() -> dict[str, Any]:
    """Where the id of a task in an answer leads: every operation on one task (OpenAPI
    links, which let a client or a stateful test chain the calls)."""
    links: dict[str, Any] = {}
    for operation in OPERATIONS:
        if _TASK_ID in operation.parameters:
            rest = operation.path.removeprefix("/api/tasks/{task_id}").replace("/", "_")
            pointer = operation.path.replace("~", "~0").replace("/", "~1")
            links[f"{operation.method}_task{rest}"] = {
                "operationRef": f"#/paths/{pointer}/{operation.method}",
                "parameters": {"task_id": "$response.body#/id"},
            }
    return links


def _response(status: int, answer: type | None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": _REASONS[status]}
    if answer is not None:
        response["content"] = {"application/json": {"schema": _ref(answer)}}
    return response


def _ref(type_: type) -> dict[str, str]:
    return {"$ref": REF.format(name=type_.__name__)}


async def openapi_json(request: Request) -> Response:
    """The document, as JSON."""
    return Response(document(), media_type="application/json")


ROUTES: list[BaseRoute] = [Route("/api/openapi.json", openapi_json, methods=["GET"])]
