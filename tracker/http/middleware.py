"""What every HTTP request and response goes through: the body limit and the security headers.

One pure ASGI middleware (no body buffering), working on raw header lists: it
sits on the path of every request, so it does as little as it can.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tracker.http.encoding import MAX_BODY
from tracker.http.errors import error_response

SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; media-src 'self'; object-src 'none'; base-uri 'none'; "
        b"frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


class EdgeMiddleware:
    """Refuses (413) a request whose declared body is over `MAX_BODY` before reading it,
    and adds `SECURITY_HEADERS` to every response.

    Bodies without a Content-Length (chunked) are counted as they are read by
    `read_json`, which stops at the limit.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > MAX_BODY:
                    response = error_response(
                        413, "payload_too_large", f"the body must be at most {MAX_BODY} bytes"
                    )
                    await response(scope, receive, _with_security_headers(send))
                    return
                break
        await self.app(scope, receive, _with_security_headers(send))


def _with_security_headers(send: Send) -> Send:
    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), *SECURITY_HEADERS]
        await send(message)

    return send_with_headers
