"""The one place that turns errors into the contract's status codes and error body."""

from __future__ import annotations

import logging
import re

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ExceptionHandler

from tracker.errors import (
    AuthError,
    BadRequest,
    CorruptLog,
    Forbidden,
    Invalid,
    InvalidCredentials,
    InvalidState,
    NotFound,
    RateLimited,
    StorageError,
    TrackerError,
    UsernameTaken,
    VersionConflict,
)
from tracker.http.encoding import HTTPProblem, json_response

logger = logging.getLogger(__name__)


class Detail(msgspec.Struct, frozen=True):
    """Which field broke which rule."""

    field: str
    message: str


class ErrorInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """What went wrong, for people and for programs."""

    code: str
    message: str
    details: list[Detail] | None = None


class ErrorBody(msgspec.Struct, frozen=True):
    """Every error response's body."""

    error: ErrorInfo


_STATUS: list[tuple[type[TrackerError], int, str]] = [
    (BadRequest, 400, "bad_request"),
    (InvalidCredentials, 401, "invalid_credentials"),
    (AuthError, 401, "unauthorized"),
    (Forbidden, 403, "forbidden"),
    (NotFound, 404, "not_found"),
    (InvalidState, 409, "invalid_state"),
    (UsernameTaken, 409, "username_taken"),
    (StorageError, 503, "unavailable"),
    (CorruptLog, 503, "unavailable"),
]

_STARLETTE_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}

_VALIDATION_PATH = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_NAMED_FIELD = re.compile(r"field `(?P<name>[^`]+)`")


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[Detail] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The contract's error body with `status`."""
    return json_response(ErrorBody(ErrorInfo(code, message, details)), status, headers)


def validation_details(error: msgspec.ValidationError) -> list[Detail]:
    """msgspec's message ("Expected `int`, got `str` - at `$.done`") as a field detail."""
    match = _VALIDATION_PATH.match(str(error))
    assert match is not None  # the pattern matches any text
    message = match["message"]
    path = (match["path"] or "").lstrip(".")
    if not path:
        named = _NAMED_FIELD.search(message)
        path = named["name"] if named else "body"
    return [Detail(path, message)]


async def tracker_error(request: Request, exc: Exception) -> Response:
    """Map a `TrackerError` to its status and body."""
    if isinstance(exc, HTTPProblem):
        return error_response(exc.status, exc.code, exc.message)
    if isinstance(exc, Invalid):
        return error_response(
            422, "validation_error", "the request is not valid", [Detail(exc.field, exc.message)]
        )
    if isinstance(exc, RateLimited):
        return error_response(
            429, "rate_limited", str(exc), headers={"Retry-After": str(exc.retry_after)}
        )
    if isinstance(exc, VersionConflict):
        return error_response(412, "version_conflict", _conflict_message(exc))
    for cls, status, code in _STATUS:
        if isinstance(exc, cls):
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            if status == 503:
                logger.error("storage unavailable: %s", exc)
                headers = {"Retry-After": "1"}
            return error_response(status, code, str(exc), headers=headers)
    return await internal_error(request, exc)


def _conflict_message(exc: VersionConflict) -> str:
    if exc.expected < 0:
        return 'If-Match must be a version in double quotes, such as "3"'
    return f"the task is at version {exc.actual}, not {exc.expected}: it changed since you read it"


async def validation_error(request: Request, exc: Exception) -> Response:
    """A body that is JSON but not what the endpoint takes."""
    assert isinstance(exc, msgspec.ValidationError)
    return error_response(
        422, "validation_error", "the request is not valid", validation_details(exc)
    )


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no such route, method not allowed) in the contract's shape."""
    assert isinstance(exc, HTTPException)
    code = _STARLETTE_CODES.get(exc.status_code, "error")
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, code, str(exc.detail).lower(), headers=headers)


async def client_gone(request: Request, exc: Exception) -> Response:
    """The client went away mid-request: nobody will read this answer, and it is no bug."""
    return error_response(400, "bad_request", "the client disconnected")


async def internal_error(request: Request, exc: Exception) -> Response:
    """A bug: logged with its traceback, answered without one."""
    logger.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "something went wrong on the server")


EXCEPTION_HANDLERS: dict[type[Exception] | int, ExceptionHandler] = {
    TrackerError: tracker_error,
    msgspec.ValidationError: validation_error,
    HTTPException: http_exception,
    ClientDisconnect: client_gone,
    Exception: internal_error,
}
