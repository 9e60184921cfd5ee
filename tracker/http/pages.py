"""The browser's pages, rendered on the server; a visitor without a session becomes a guest."""

from __future__ import annotations

from typing import Any

import jinja2
import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from tracker.auth import Principal, Session
from tracker.errors import AuthError
from tracker.http import openapi
from tracker.http.api import cookie_secure, tracker_of
from tracker.http.session import authenticate, authenticate_if_any, set_session_cookie

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
        if request.method == "HEAD":  # a probe, not a visitor: start no guest for it
            return Response(headers={"Cache-Control": "no-store"}, media_type="text/html")
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


async def api_docs(request: Request) -> Response:
    """The API, for people: every endpoint and schema of the OpenAPI document."""
    principal = authenticate_if_any(request, tracker_of(request))
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
    Route("/docs", api_docs, methods=["GET"]),
    Mount("/static", StaticFiles(packages=[("tracker.web", "static")]), name="static"),
]
