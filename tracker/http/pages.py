"""The browser's pages, rendered on the server; a visitor without a session becomes a guest."""

from __future__ import annotations

import math
from typing import Any

import jinja2
import markupsafe
import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from tracker.auth import Principal, Session
from tracker.clock import format_timestamp
from tracker.errors import AuthError
from tracker.http import openapi
from tracker.http.api import cookie_secure, tracker_of
from tracker.http.session import authenticate, authenticate_if_any, set_session_cookie
from tracker.http.task_lists import TaskList
from tracker.projections.board import Timer


def countdown(seconds: float) -> str:
    """A countdown as the page shows it: `mm:ss`, or `h:mm:ss` past an hour (whole seconds up)."""
    whole = math.ceil(max(0.0, seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def tracked(seconds: float) -> str:
    """Tracked time in short words: `45s`, `12m 05s`, `3h 07m`."""
    whole = math.floor(max(0.0, seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def progress(timer: Timer | None) -> int:
    """How much of the countdown has passed, in thousandths (the page's progress bar)."""
    if timer is None:
        return 0
    done = 1 - timer.remaining_seconds / timer.duration_seconds
    return round(1000 * min(1.0, max(0.0, done)))


def timer_state(timer: Timer | None) -> str:
    """A timer's state in a word or two."""
    if timer is None:
        return ""
    return {"running": "Running", "paused": "Paused", "finished": "Time's up"}[timer.state]


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("tracker.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters.update(
        countdown=countdown, tracked=tracked, progress=progress, timer_state=timer_state
    )
    return environment


templates = Jinja2Templates(env=_environment())


class BoardState(TaskList, kw_only=True):
    """What the board page starts from, before its live connection is up."""

    principal: Principal
    server_time: str


async def board(request: Request) -> Response:
    """The board of the visitor's tasks, starting a guest session if there is none."""
    tracker = tracker_of(request)
    session: Session | None = None
    try:
        principal: Principal = await authenticate(request, tracker)
    except AuthError:
        if request.method == "HEAD":  # a probe, not a visitor: start no guest for it
            return Response(headers={"Cache-Control": "no-store"}, media_type="text/html")
        session = await tracker.start_guest()
        principal = session.principal
    tasks = tracker.tasks(principal)
    state = BoardState(
        tasks=tasks,
        position=tracker.model.position,
        principal=principal,
        server_time=format_timestamp(tracker.clock()),
    )
    response = templates.TemplateResponse(
        request,
        "index.html",
        {"principal": principal, "tasks": tasks, "initial_state": _script_json(state)},
        headers={"Cache-Control": "no-store"},
    )
    if session is not None:
        set_session_cookie(response, request, session, secure=cookie_secure(request))
    return response


def _script_json(value: msgspec.Struct) -> markupsafe.Markup:
    """JSON that is safe inside a `<script type="application/json">` element."""
    text = msgspec.json.encode(value).decode()
    for character, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(character, escape)
    return markupsafe.Markup(text)  # noqa: S704 (every markup character is escaped above)


async def login_page(request: Request) -> Response:
    return await _account_page(request, "login", "Log in")


async def register_page(request: Request) -> Response:
    return await _account_page(request, "register", "Register")


async def _account_page(request: Request, mode: str, heading: str) -> Response:
    """The log-in or register form; it tells a guest what becomes of their tasks."""
    tracker = tracker_of(request)
    principal = await authenticate_if_any(request, tracker)
    guest_tasks = len(tracker.tasks(principal)) if principal and principal.kind == "guest" else 0
    return templates.TemplateResponse(
        request,
        "account.html",
        {
            "principal": principal or Principal(id="", kind="guest"),
            "mode": mode,
            "heading": heading,
            "guest_tasks": guest_tasks,
        },
        headers={"Cache-Control": "no-store"},
    )


async def api_docs(request: Request) -> Response:
    """The API, for people: every endpoint and schema of the OpenAPI document."""
    principal = await authenticate_if_any(request, tracker_of(request))
    return templates.TemplateResponse(
        request,
        "docs.html",
        {
            "principal": principal or Principal(id="", kind="guest"),
            "doc": msgspec.json.decode(openapi.document()),
            "ref_name": _ref_name,
            "type_of": _type_of,
        },
    )


def _ref_name(schema: dict[str, Any]) -> str:
    return str(schema.get("$ref", "")).rsplit("/", 1)[-1]


def _type_of(spec: dict[str, Any]) -> str:
    """A schema's type in a few words (a reference, a union, an array, a literal...)."""
    if "$ref" in spec:
        return _ref_name(spec)
    if "anyOf" in spec:
        return " or ".join(_type_of(option) for option in spec["anyOf"])
    if "enum" in spec:
        return " | ".join(repr(value) for value in spec["enum"])
    if spec.get("type") == "array":
        return f"array of {_type_of(spec.get('items', {}))}"
    return str(spec.get("type", "any"))


ROUTES: list[BaseRoute] = [
    Route("/", board, methods=["GET"]),
    Route("/login", login_page, methods=["GET"]),
    Route("/register", register_page, methods=["GET"]),
    Route("/docs", api_docs, methods=["GET"]),
    Mount("/static", StaticFiles(packages=[("tracker.web", "static")]), name="static"),
]
