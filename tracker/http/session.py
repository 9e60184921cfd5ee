"""Who is asking: credentials from a bearer header or the session cookie, and CSRF checks."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import HTTPConnection
from starlette.responses import Response

from tracker.auth import Principal, Session
from tracker.errors import AuthError, Forbidden
from tracker.service import Tracker

COOKIE_NAME = "tracker_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def authenticate(connection: HTTPConnection, tracker: Tracker) -> Principal:
    """The principal behind the request's credentials; AuthError without valid ones."""
    return await tracker.authenticate(credentials(connection))


async def authenticate_if_any(connection: HTTPConnection, tracker: Tracker) -> Principal | None:
    """The principal behind the request's credentials, or None without valid ones.

    A cookie sent by another site's page is still refused (Forbidden).
    """
    try:
        return await authenticate(connection, tracker)
    except AuthError:
        return None


def credentials(connection: HTTPConnection) -> str:
    """The request's token; AuthError without one.

    A bearer header wins over the cookie. A state-changing request that relies
    on the cookie must come from this site's own pages (see `check_same_origin`).
    """
    header = connection.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("the Authorization header must be 'Bearer <token>'")
        return token.strip()
    cookie = connection.cookies.get(COOKIE_NAME)
    if not cookie:
        raise AuthError("sign in, or start a guest session, first")
    if connection.scope.get("method", "GET") not in SAFE_METHODS:
        check_same_origin(connection, required=True)
    return cookie


def check_same_origin(connection: HTTPConnection, *, required: bool) -> None:
    """Refuse a request sent by another site's page (CSRF).

    Browsers send `Origin` (or at least `Referer`) with every cross-site
    state-changing request, and a page cannot forge them. When `required`, a
    request with neither is refused too.
    """
    source = connection.headers.get("origin") or connection.headers.get("referer")
    if source is None or source == "null":
        if required:
            raise Forbidden("cross-site request refused: no Origin or Referer header")
        return
    try:
        netloc = urlsplit(source).netloc.lower()
    except ValueError:
        netloc = ""
    host = own_host(connection)
    if not host or netloc != host:
        raise Forbidden("cross-site request refused: Origin does not match this site")


def own_host(connection: HTTPConnection) -> str:
    """The host (and port) the client addressed."""
    return connection.headers.get("host", "").lower()


def set_session_cookie(
    response: Response, connection: HTTPConnection, session: Session, *, secure: bool
) -> None:
    """Hand the browser its session: HttpOnly, SameSite=Lax, Path=/, with a Max-Age."""
    response.set_cookie(
        COOKIE_NAME,
        session.token,
        max_age=session.expires_at - session.issued_at,
        path="/",
        secure=secure or connection.url.scheme in ("https", "wss"),
        httponly=True,
        samesite="lax",
    )


def clear_session_cookie(response: Response, connection: HTTPConnection, *, secure: bool) -> None:
    """Tell the browser to forget its session."""
    response.delete_cookie(
        COOKIE_NAME,
        path="/",
        secure=secure or connection.url.scheme in ("https", "wss"),
        httponly=True,
        samesite="lax",
    )
