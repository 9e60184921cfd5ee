"""Every input limit at and just past its edge, and malformed requests of every kind.

Each response also passes the client's hook: never a 500, and every error is
`{"error": {"code", "message"}}` (see `conftest.check_response`).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.conftest import Guest, Server, check_error_body, error_of

MAX_BODY = 64 * 1024
JSON = {"Content-Type": "application/json"}


def post_raw(guest: Guest, body: bytes | Iterator[bytes], **headers: str) -> Any:
    return guest.client.post("/api/tasks", content=body, headers={**JSON, **headers})


def padded(document: dict[str, Any], size: int) -> bytes:
    """`document` as JSON, padded with insignificant white space to exactly `size` bytes."""
    encoded = json.dumps(document).encode()
    assert len(encoded) <= size
    return encoded[:-1] + b" " * (size - len(encoded)) + b"}"


def chunks(body: bytes, size: int = 8192) -> Iterator[bytes]:
    """The body as a generator: httpx sends it chunked, with no Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


# Titles

GOOD_TITLES = [
    ("x", "x"),
    ("x" * 200, "x" * 200),
    ("  " + "x" * 200 + "   ", "x" * 200),
    ("\t\n " + "y" * 200 + "\r\n", "y" * 200),
    ("é" * 200, "é" * 200),
    ("😀" * 200, "😀" * 200),
    ("  inner  spaces  ", "inner  spaces"),
]


@pytest.mark.parametrize(
    ("title", "stored"), GOOD_TITLES, ids=["1", "200", "200-padded", "200-ws", "é", "emoji", "in"]
)
def test_title_within_limits_is_accepted(guest: Guest, title: str, stored: str) -> None:
    created = guest.client.post("/api/tasks", json={"title": title})
    assert created.status_code == 201, created.text
    assert created.json()["title"] == stored
    patched = guest.client.patch(f"/api/tasks/{created.json()['id']}", json={"title": title})
    assert patched.status_code == 200
    assert patched.json()["title"] == stored


BAD_TITLES = [
    "",
    " ",
    "     \t\n\r  ",
    "\u3000\u00a0",
    "x" * 201,
    " " + "x" * 201 + " ",
    "😀" * 201,
    "\x00",
    "a\x00b",
    "a\x01b",
    "a\x1bb",
    "a\x7fb",
    "a\nb",
    "a\rb",
    "a\tb",
]


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize(
    "title",
    BAD_TITLES,
    ids=[
        "empty",
        "space",
        "whitespace",
        "unicode-space",
        "201",
        "201-padded",
        "201-emoji",
        "nul",
        "inner-nul",
        "soh",
        "esc",
        "del",
        "newline",
        "cr",
        "tab",
    ],
)
def test_title_out_of_limits_is_422_naming_title(guest: Guest, method: str, title: str) -> None:
    task = guest.create("before")
    if method == "POST":
        response = guest.client.post("/api/tasks", json={"title": title})
    else:
        response = guest.client.patch(f"/api/tasks/{task['id']}", json={"title": title})
    error = error_of(response, 422, "validation_error")
    assert error["details"][0]["field"] == "title"
    assert guest.client.get("/api/tasks").json()["tasks"] == [task]


# Notes


@pytest.mark.parametrize(
    "notes",
    ["", "n" * 10_000, "é" * 10_000, "😀" * 10_000, "line 1\nline 2\r\n\tindented"],
    ids=["empty", "10000", "10000-é", "10000-emoji", "whitespace"],
)
def test_notes_within_limits_are_accepted(guest: Guest, notes: str) -> None:
    created = guest.client.post("/api/tasks", json={"title": "t", "notes": notes})
    assert created.status_code == 201
    assert created.json()["notes"] == notes
    task_id = created.json()["id"]
    guest.client.patch(f"/api/tasks/{task_id}", json={"notes": ""})
    patched = guest.client.patch(f"/api/tasks/{task_id}", json={"notes": notes})
    assert patched.status_code == 200
    assert patched.json()["notes"] == notes


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize(
    "notes",
    ["n" * 10_001, "😀" * 10_001, "a\x00b", "a\x1bb", "a\x7f", "\x0b", "\x0c"],
    ids=["10001", "10001-emoji", "nul", "esc", "del", "vt", "ff"],
)
def test_notes_out_of_limits_are_422_naming_notes(guest: Guest, method: str, notes: str) -> None:
    task = guest.create("before")
    if method == "POST":
        response = guest.client.post("/api/tasks", json={"title": "t", "notes": notes})
    else:
        response = guest.client.patch(f"/api/tasks/{task['id']}", json={"notes": notes})
    error = error_of(response, 422, "validation_error")
    assert error["details"][0]["field"] == "notes"
    assert guest.client.get("/api/tasks").json()["tasks"] == [task]


# Types and shapes

WRONG_TYPES_POST = [
    ({"title": 1}, "title"),
    ({"title": None}, "title"),
    ({"title": ["x"]}, "title"),
    ({"title": {"text": "x"}}, "title"),
    ({"title": True}, "title"),
    ({"title": "x", "notes": 1}, "notes"),
    ({"title": "x", "notes": None}, "notes"),
    ({"title": "x", "notes": ["n"]}, "notes"),
    ({}, "title"),
    ({"notes": "no title"}, "title"),
]


@pytest.mark.parametrize(("body", "field"), WRONG_TYPES_POST, ids=str)
def test_create_with_a_wrong_type_is_422_naming_the_field(
    guest: Guest, body: dict[str, Any], field: str
) -> None:
    error = error_of(guest.client.post("/api/tasks", json=body), 422, "validation_error")
    assert error["details"][0]["field"] == field


WRONG_TYPES_PATCH = [
    ({"done": "true"}, "done"),
    ({"done": 1}, "done"),
    ({"done": 0}, "done"),
    ({"done": None}, "done"),
    ({"title": None}, "title"),
    ({"title": 5}, "title"),
    ({"notes": False}, "notes"),
]


@pytest.mark.parametrize(("body", "field"), WRONG_TYPES_PATCH, ids=str)
def test_patch_with_a_wrong_type_is_422_naming_the_field(
    guest: Guest, body: dict[str, Any], field: str
) -> None:
    task = guest.create("typed")
    response = guest.client.patch(f"/api/tasks/{task['id']}", json=body)
    error = error_of(response, 422, "validation_error")
    assert error["details"][0]["field"] == field
    assert guest.client.get(f"/api/tasks/{task['id']}").json() == task


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize("body", [[], ["title"], "title", 1, None, True], ids=str)
def test_a_body_that_is_not_an_object_is_422(guest: Guest, method: str, body: Any) -> None:
    task = guest.create("shape")
    path = "/api/tasks" if method == "POST" else f"/api/tasks/{task['id']}"
    response = guest.client.request(method, path, content=json.dumps(body), headers=JSON)
    error_of(response, 422, "validation_error")


@pytest.mark.parametrize(
    ("method", "body", "field"),
    [
        ("POST", {"title": "x", "owner": "me"}, "owner"),
        ("POST", {"title": "x", "id": "chosen"}, "id"),
        ("POST", {"title": "x", "done": True}, "done"),
        ("POST", {"title": "x", "Title": "y"}, "Title"),
        ("PATCH", {"version": 9}, "version"),
        ("PATCH", {"title": "x", "timer": None}, "timer"),
        ("PATCH", {"id": "other"}, "id"),
    ],
    ids=str,
)
def test_unknown_field_is_422_naming_it(
    guest: Guest, method: str, body: dict[str, Any], field: str
) -> None:
    task = guest.create("strict")
    path = "/api/tasks" if method == "POST" else f"/api/tasks/{task['id']}"
    error = error_of(guest.client.request(method, path, json=body), 422, "validation_error")
    assert error["details"][0]["field"] == field
    assert guest.client.get("/api/tasks").json()["tasks"] == [task]


# Body size


def test_body_of_exactly_64_kib_is_accepted(guest: Guest) -> None:
    body = padded({"title": "big but fine"}, MAX_BODY)
    response = post_raw(guest, body)
    assert response.status_code == 201, response.text
    assert response.json()["title"] == "big but fine"


def test_body_one_byte_over_64_kib_is_413(guest: Guest) -> None:
    error_of(post_raw(guest, padded({"title": "x"}, MAX_BODY + 1)), 413, "payload_too_large")
    assert guest.client.get("/api/tasks").json()["tasks"] == []


def test_chunked_body_of_exactly_64_kib_is_accepted(guest: Guest) -> None:
    response = post_raw(guest, chunks(padded({"title": "chunked"}, MAX_BODY)))
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert response.status_code == 201, response.text


def test_chunked_body_one_byte_over_64_kib_is_413(guest: Guest) -> None:
    response = post_raw(guest, chunks(padded({"title": "x"}, MAX_BODY + 1)))
    assert response.request.headers.get("transfer-encoding") == "chunked"
    error_of(response, 413, "payload_too_large")
    assert guest.client.get("/api/tasks").json()["tasks"] == []


def test_large_chunked_body_is_413(guest: Guest) -> None:
    error_of(post_raw(guest, chunks(b"x" * (1 << 20))), 413, "payload_too_large")


def test_patch_body_over_64_kib_is_413(guest: Guest) -> None:
    task = guest.create("small")
    response = guest.client.patch(
        f"/api/tasks/{task['id']}",
        content=padded({"title": "huge"}, MAX_BODY + 100),
        headers=JSON,
    )
    error_of(response, 413, "payload_too_large")
    assert guest.client.get(f"/api/tasks/{task['id']}").json() == task


def test_declared_huge_body_is_refused_without_reading_it(server: Server, guest: Guest) -> None:
    """Content-Length says 100 MB, only a few bytes follow: the answer comes at once."""
    request = (
        "POST /api/tasks HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {guest.token}\r\n"
        "Content-Type: application/json\r\n"
        "Content-Length: 100000000\r\n"
        "Connection: close\r\n\r\n"
        '{"title": "'
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            data = sock.recv(65536)
            if not data:
                break
            received += data
    status_line = received.split(b"\r\n", 1)[0]
    assert status_line.split()[1] == b"413", received[:500]


# Media type


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "application/json; charset=latin-1",
        "application/jsonx",
        "text/json",
        "application/merge-patch+json",
        "",
    ],
    ids=str,
)
def test_wrong_content_type_is_415(guest: Guest, content_type: str | None) -> None:
    task = guest.create("media")
    body = json.dumps({"title": "x"}).encode()
    headers = {} if content_type is None else {"Content-Type": content_type}
    error_of(
        guest.client.post("/api/tasks", content=body, headers=headers),
        415,
        "unsupported_media_type",
    )
    response = guest.client.patch(f"/api/tasks/{task['id']}", content=body, headers=headers)
    error_of(response, 415, "unsupported_media_type")
    assert guest.client.get("/api/tasks").json()["tasks"] == [task]


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "Application/JSON", 'application/json; charset="UTF-8"'],
)
def test_json_content_type_variants_are_accepted(guest: Guest, content_type: str) -> None:
    response = post_raw(guest, b'{"title": "typed"}', **{"Content-Type": content_type})
    assert response.status_code == 201


@pytest.mark.parametrize(
    "content_type",
    ["application/json; foo=bar", "application/json; charset=utf-8; profile=x"],
)
def test_json_content_type_with_other_parameters_is_accepted(
    guest: Guest, content_type: str
) -> None:
    response = post_raw(guest, b'{"title": "typed"}', **{"Content-Type": content_type})
    assert response.status_code == 201, response.text


def test_oversized_body_of_the_wrong_type_is_refused(guest: Guest) -> None:
    response = guest.client.post(
        "/api/tasks", content=b"x" * (MAX_BODY + 1), headers={"Content-Type": "text/plain"}
    )
    assert response.status_code in (413, 415)


# Malformed JSON

MALFORMED = [
    b"",
    b" ",
    b"{",
    b'{"title": "x"',
    b"{title: 'x'}",
    b'{"title": "x",}',
    b'{"title": "x"} trailing',
    b'{"title": "x"}{"title": "y"}',
    b'{"title": NaN}',
    b'{"title": "\\ud800"}',
    b'{"title": "\\x41"}',
    b"\xef\xbb\xbf",
    b"nul\x00",
]


@pytest.mark.parametrize("body", MALFORMED, ids=repr)
def test_malformed_json_is_400(guest: Guest, body: bytes) -> None:
    error_of(post_raw(guest, body), 400, "bad_request")
    assert guest.client.get("/api/tasks").json()["tasks"] == []


INVALID_UTF8 = [
    b'{"title": "\xff"}',
    b'{"title": "caf\xe9"}',
    b'{"title": "\xc3\x28"}',
    b'{"title": "\xc0\xaf"}',
    b'{"title": "\xed\xa0\x80"}',
    b'{"title": "x", "notes": "\xf0\x28\x8c\x28"}',
]


@pytest.mark.parametrize("body", INVALID_UTF8, ids=repr)
def test_invalid_utf8_is_400(guest: Guest, body: bytes) -> None:
    error_of(post_raw(guest, body), 400, "bad_request")


def test_invalid_utf8_in_a_patch_is_400(guest: Guest) -> None:
    task = guest.create("target")
    response = guest.client.patch(
        f"/api/tasks/{task['id']}", content=b'{"notes": "\xff"}', headers=JSON
    )
    error_of(response, 400, "bad_request")


def test_deeply_nested_json_is_refused_cleanly(guest: Guest) -> None:
    for body in (b"[" * 60_000, b'{"title": "x", "notes": ' + b"[" * 60_000):
        response = post_raw(guest, body)
        assert response.status_code in (400, 422)


def test_invalid_content_length_is_refused(server: Server, guest: Guest) -> None:
    request = (
        "POST /api/tasks HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {guest.token}\r\n"
        "Content-Type: application/json\r\n"
        "Content-Length: 12abc\r\n"
        "Connection: close\r\n\r\n"
        '{"title": 1}'
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request)
        received = b""
        while data := sock.recv(65536):
            received += data
    assert received.split()[1] == b"400", received[:300]


# Ids


BAD_IDS = [
    "x" * 65,
    "A1_-" * 17,
    "abc.def",
    "abc~",
    "abc$",
    "ab c",
    "ab+c",
    "ü",
    "abc%00",
    "abc'--",
    "*",
    "abc%2Fdef",
    "%ff",
    "abc%c3%28",
    "%e2%80%ae",
]


@pytest.mark.parametrize(
    ("method", "suffix"), [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("GET", "/history")]
)
@pytest.mark.parametrize("task_id", BAD_IDS, ids=repr)
def test_malformed_id_is_not_found(guest: Guest, task_id: str, method: str, suffix: str) -> None:
    body = {"done": True} if method == "PATCH" else None
    response = guest.client.request(method, f"/api/tasks/{task_id}{suffix}", json=body)
    error_of(response, 404, "not_found")


def test_longest_wellformed_unknown_id_is_not_found(guest: Guest) -> None:
    error_of(guest.client.get("/api/tasks/" + "Z" * 64), 404, "not_found")


# Fuzz: whatever the body, an answer in the contract

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
FIELDS = st.sampled_from(["title", "notes", "done", "x"])
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(FIELDS, children, max_size=3),
    max_leaves=6,
)


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=JSON_VALUES)
def test_any_json_body_gets_a_contract_answer(guest: Guest, body: Any) -> None:
    response = post_raw(guest, json.dumps(body).encode())
    assert response.status_code in (201, 422), response.text
    if response.status_code == 422:
        check_error_body(response)
    else:
        title = response.json()["title"]
        assert title == body["title"].strip()
        assert 1 <= len(title) <= 200


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(title=st.text(max_size=210))
def test_any_title_is_either_stored_trimmed_or_refused(guest: Guest, title: str) -> None:
    response = guest.client.post("/api/tasks", json={"title": title})
    if response.status_code == 201:
        assert response.json()["title"] == title.strip()
        assert 1 <= len(title.strip()) <= 200
    else:
        error = error_of(response, 422, "validation_error")
        assert error["details"][0]["field"] == "title"


@settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=st.binary(max_size=300),
    target=st.sampled_from(
        [
            ("POST", "/api/tasks"),
            ("PATCH", "/api/tasks/{id}"),
            ("POST", "/api/tasks/{id}/timer/start"),
            ("POST", "/api/auth/register"),
            ("POST", "/api/auth/login"),
        ]
    ),
)
def test_random_bytes_get_a_clear_4xx_and_change_nothing(
    guest: Guest, body: bytes, target: tuple[str, str]
) -> None:
    task = guest.create("unchanged")
    method, path = target
    response = guest.client.request(method, path.format(id=task["id"]), content=body, headers=JSON)
    if response.status_code < 400:  # random bytes that happen to be a valid request
        assert json.loads(body)
        return
    assert response.status_code in (400, 422, 429), response.text
    check_error_body(response)
    assert guest.client.get(f"/api/tasks/{task['id']}").json() == task
