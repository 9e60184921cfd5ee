"""The browser's pages, rendered on the server; a visitor without a session becomes a guest."""

from __future__ import annotations

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from tracker.auth import Principal, Session
from tracker.errors import AuthError
from tracker.http.api import cookie_secure, tracker_of
from tracker.http.session import authenticate, set_session_cookie

templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.PackageLoader("tracker.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
)


async def board(request: Request) -> Response:
    """The board of the visitor's tasks, starting a guest session if there is none."""
    tracker = tracker_of(request)
    session: Session | None = None
    try:
        principal: Principal = authenticate(request, tracker)
    except AuthError:
        session = await tracker.start_guest()
        principal = session.principal
    response = templates.TemplateResponse(
        request,
        "index.html",
        {"principal": principal, "tasks": tracker.tasks(principal)},
        headers={"Cache-Control": "no-store"},
    )
    if session is not None:
        set_session_cookie(response, request, session, secure=cookie_secure(request))
    return response


ROUTES: list[BaseRoute] = [
    Route("/", board, methods=["GET"]),
    Mount("/static", StaticFiles(packages=[("tracker.web", "static")]), name="static"),
]
