"""The JSON API: each endpoint parses, asks the application, and encodes the answer."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from tracker.audit import DEFAULT_LIMIT, EventQuery
from tracker.auth import Principal, Session
from tracker.clock import format_timestamp
from tracker.domain import CreateTask, Credentials, NewCredentials, StartTimer, UpdateTask
from tracker.errors import BadRequest, NotFound, VersionConflict
from tracker.events.records import Recorded
from tracker.http.encoding import (
    NDJSON,
    JSONResponse,
    accepts,
    encode,
    json_response,
    ndjson_response,
    read_json,
)
from tracker.http.session import (
    authenticate,
    authenticate_if_any,
    check_same_origin,
    clear_session_cookie,
    credentials,
    set_session_cookie,
)
from tracker.http.task_lists import TaskList, TaskLists
from tracker.projections.board import Task, task_stream
from tracker.service import Tracker

Endpoint = Callable[[Request], Awaitable[Response]]

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_POSITION = re.compile(r"[0-9]{1,18}")
_IF_MATCH = re.compile(r'"(?P<quoted>[0-9]{1,18})"|(?P<bare>[0-9]{1,18})')


class EventList(msgspec.Struct):
    """Events of the log, in position order."""

    events: list[Recorded]


class EventPage(msgspec.Struct):
    """A page of the log. `next_after` is the `after` of the next page; null at the end."""

    events: list[Recorded]
    next_after: int | None


class AuthResult(msgspec.Struct):
    """A session: who it is for and its bearer token."""

    user: Principal
    access_token: str
    expires_at: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (a scheme name, not a secret)


class Health(msgspec.Struct):
    """The server is up; `position` is the head of its log."""

    status: str
    position: int


# What the lifespan yielded is in every request's scope (`request.state` wraps the same
# dict in a new object per request).


def tracker_of(request: Request) -> Tracker:
    """The application the lifespan built for this app."""
    tracker: Tracker = request.scope["state"]["tracker"]
    return tracker


def task_lists_of(request: Request) -> TaskLists:
    """The encoded task lists the lifespan keeps for this app."""
    task_lists: TaskLists = request.scope["state"]["task_lists"]
    return task_lists


def cookie_secure(request: Request) -> bool:
    """Whether cookies must be Secure whatever the scheme (TRACKER_COOKIE_SECURE)."""
    return bool(request.scope["state"]["cookie_secure"])


async def healthz(request: Request) -> Response:
    return json_response(Health("ok", tracker_of(request).model.position))


async def start_guest(request: Request) -> Response:
    check_same_origin(request, required=False)
    session = await tracker_of(request).start_guest()
    return session_response(request, session, 201)


async def register(request: Request) -> Response:
    tracker = tracker_of(request)
    check_same_origin(request, required=False)
    guest = await authenticate_if_any(request, tracker)
    command = await read_json(request, NewCredentials)
    session = await tracker.register(command, guest)
    return session_response(request, session, 201)


async def login(request: Request) -> Response:
    check_same_origin(request, required=False)
    command = await read_json(request, Credentials)
    address = request.client.host if request.client is not None else "unknown"
    session = await tracker_of(request).login(command, address)
    return session_response(request, session, 200)


async def logout(request: Request) -> Response:
    await tracker_of(request).logout(credentials(request))
    response = Response(status_code=204)
    clear_session_cookie(response, request, secure=cookie_secure(request))
    return response


async def me(request: Request) -> Response:
    return json_response(await authenticate(request, tracker_of(request)))


async def list_tasks(request: Request) -> Response:
    tracker = tracker_of(request)
    principal = await authenticate(request, tracker)
    as_of = request.query_params.get("as_of") if request.scope["query_string"] else None
    if as_of is None:
        body = task_lists_of(request).encoded(principal.id, tracker.model.position)
        return Response(body, media_type="application/json")
    position = _position(as_of)
    return json_response(TaskList(await tracker.tasks_as_of(principal, position), position))


async def create_task(request: Request) -> Response:
    tracker = tracker_of(request)
    principal = await authenticate(request, tracker)
    command = await read_json(request, CreateTask)
    task = await tracker.create_task(principal, command)
    return task_response(task, 201, location=f"/api/tasks/{task.id}")


async def get_task(request: Request) -> Response:
    tracker = tracker_of(request)
    principal = await authenticate(request, tracker)
    return task_response(await tracker.find_task(principal, _task_id(request)))


async def update_task(request: Request) -> Response:
    tracker = tracker_of(request)
    principal = await authenticate(request, tracker)
    task_id = _task_id(request)
    command = await read_json(request, UpdateTask)
    task = await tracker.update_task(principal, task_id, command, _if_match(request, task_id))
    return task_response(task)


async def delete_task(request: Request) -> Response:
    tracker = tracker_of(request)
    principal = await authenticate(request, tracker)
    task_id = _task_id(request)
    await tracker.delete_task(principal, task_id, _if_match(request, task_id))
    return Response(status_code=204)


async def task_history(request: Request) -> Response:
    tracker = tracker_of(request)
    principal = await authenticate(request, tracker)
    return json_response(EventList(await tracker.history(principal, _task_id(request))))


async def list_events(request: Request) -> Response:
    """The caller's events (every event, for an admin): a page, or all of them as NDJSON."""
    tracker = tracker_of(request)
    principal = await authenticate(request, tracker)
    query = _event_query(request)
    if accepts(request, NDJSON):
        return ndjson_response(tracker.events(principal, query), {"Cache-Control": "no-store"})
    limit = query.limit or DEFAULT_LIMIT
    page = msgspec.structs.replace(query, limit=limit)
    events = [record async for record in tracker.events(principal, page)]
    next_after = events[-1].position if len(events) == limit else None
    return json_response(EventPage(events, next_after), headers={"Cache-Control": "no-store"})


def _event_query(request: Request) -> EventQuery:
    params = request.query_params
    numbers = {}
    for name in ("after", "limit"):
        text = params.get(name)
        if text is not None:
            if not _POSITION.fullmatch(text):
                raise BadRequest(f"{name} must be a non-negative whole number")
            numbers[name] = int(text)
    return EventQuery(**numbers, type=params.get("type"), stream=params.get("stream"))


async def start_timer(request: Request) -> Response:
    tracker = tracker_of(request)
    principal = await authenticate(request, tracker)
    task_id = _task_id(request)
    command = await read_json(request, StartTimer)
    return task_response(await tracker.start_timer(principal, task_id, command))


TimerAction = Callable[[Tracker, Principal, str], Awaitable[Task]]


def timer_endpoint(action: TimerAction) -> Endpoint:
    """The endpoint of a bodiless timer command (pause, resume, stop)."""

    async def endpoint(request: Request) -> Response:
        tracker = tracker_of(request)
        principal = await authenticate(request, tracker)
        return task_response(await action(tracker, principal, _task_id(request)))

    return endpoint


def task_response(task: Task, status: int = 200, location: str | None = None) -> Response:
    """A task, with its version as the ETag."""
    headers = [(b"etag", b'"%d"' % task.version)]
    if location is not None:
        headers.append((b"location", location.encode("latin-1")))
    return JSONResponse(encode(task), status, headers)


def session_response(request: Request, session: Session, status: int) -> Response:
    """An `AuthResult`, with the session cookie set."""
    result = AuthResult(
        user=session.principal,
        access_token=session.token,
        expires_at=format_timestamp(session.expires_at),
    )
    response = json_response(result, status, {"Cache-Control": "no-store"})
    set_session_cookie(response, request, session, secure=cookie_secure(request))
    return response


def _task_id(request: Request) -> str:
    task_id: str = request.path_params["task_id"]
    if not _ID.fullmatch(task_id):
        raise NotFound("no such task")
    return task_id


def _if_match(request: Request, task_id: str) -> int | None:
    """The version `If-Match` demands, None without one; 412 if it can never match."""
    header = request.headers.get("if-match")
    if header is None or header.strip() == "*":
        return None
    match = _IF_MATCH.fullmatch(header.strip())
    if match is None:
        raise VersionConflict(task_stream(task_id), -1, -1)
    return int(match["quoted"] or match["bare"])


def _position(text: str) -> int:
    if not _POSITION.fullmatch(text):
        raise BadRequest("as_of must be a non-negative whole number (a log position)")
    return int(text)


class ByMethod:
    """The ASGI app of one path: an endpoint per method, so that a 405 names them all in
    `Allow`. What an endpoint raises goes on to the app's exception handlers (through
    Starlette's `ExceptionMiddleware`: this app leaves out the second such layer that
    Starlette puts around each endpoint function)."""

    def __init__(self, **handlers: Endpoint) -> None:
        if "GET" in handlers:
            handlers.setdefault("HEAD", handlers["GET"])
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        response = await self.handlers[request.method](request)
        await response(scope, receive, send)


def _route(path: str, **handlers: Endpoint) -> Route:
    return Route(path, ByMethod(**handlers), methods=list(handlers))


ROUTES: list[BaseRoute] = [  # the busiest first: the router tries them in order
    _route("/api/tasks", POST=create_task, GET=list_tasks),
    _route("/api/tasks/{task_id}", PATCH=update_task, GET=get_task, DELETE=delete_task),
    _route("/api/tasks/{task_id}/history", GET=task_history),
    _route("/api/tasks/{task_id}/timer/start", POST=start_timer),
    _route("/api/tasks/{task_id}/timer/pause", POST=timer_endpoint(Tracker.pause_timer)),
    _route("/api/tasks/{task_id}/timer/resume", POST=timer_endpoint(Tracker.resume_timer)),
    _route("/api/tasks/{task_id}/timer/stop", POST=timer_endpoint(Tracker.stop_timer)),
    _route("/api/events", GET=list_events),
    _route("/api/auth/guest", POST=start_guest),
    _route("/api/auth/register", POST=register),
    _route("/api/auth/login", POST=login),
    _route("/api/auth/logout", POST=logout),
    _route("/api/auth/me", GET=me),
    _route("/healthz", GET=healthz),
]
