"""When the session cookie is Secure: over HTTPS, by setting, or by a trusted proxy's word."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

JSON = {"Content-Type": "application/json"}


def cookie_of(server: Any, headers: dict[str, str] | None = None) -> str:
    with httpx.Client(base_url=server.url) as client:
        response = client.post("/api/auth/guest", headers=headers or {})
    assert response.status_code == 201
    cookie: str = response.headers["set-cookie"].lower()
    return cookie


@pytest.mark.parametrize(
    ("env", "headers", "secure"),
    [
        ({}, {}, False),
        ({"TRACKER_COOKIE_SECURE": "1"}, {}, True),
        ({}, {"X-Forwarded-Proto": "https"}, False),  # an untrusted claim is ignored
        ({"TRACKER_TRUST_PROXY": "1"}, {"X-Forwarded-Proto": "https"}, True),
        ({"TRACKER_TRUST_PROXY": "1"}, {"X-Forwarded-Proto": "http"}, False),
    ],
)
def test_the_cookie_is_secure_exactly_when_it_should_be(
    start_server: Any, env: dict[str, str], headers: dict[str, str], secure: bool
) -> None:
    server = start_server(**env)

    cookie = cookie_of(server, headers)

    assert ("; secure" in cookie) is secure
    for attribute in ("httponly", "samesite=lax", "path=/", "max-age="):
        assert attribute in cookie


def test_every_response_carries_the_security_headers(start_server: Any) -> None:
    server = start_server()
    with httpx.Client(base_url=server.url) as client:
        for path in ("/", "/docs", "/healthz", "/nowhere", "/static/app.css"):
            headers = client.get(path).headers
            assert headers["x-content-type-options"] == "nosniff"
            assert "frame-ancestors 'none'" in headers["content-security-policy"]
            assert "unsafe-inline" not in headers["content-security-policy"]
            assert headers["x-frame-options"] == "DENY"
            assert headers["referrer-policy"] == "same-origin"
        # (The page visit above started a guest session: this one asks without it.)
        answers = [httpx.get(f"{server.url}/api/tasks"), client.get("/api/nowhere")]
        token = client.post("/api/auth/guest").json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        answers += [
            client.post("/api/tasks", json={"title": "t"}, headers=auth),
            client.get("/api/tasks", headers=auth),
            client.post("/api/tasks", content=b"{", headers=auth | JSON),
        ]
        for response in answers:
            # JSON: never sniffed, and as a document it loads nothing and is never framed.
            assert response.headers["x-content-type-options"] == "nosniff", response.url
            csp = response.headers["content-security-policy"]
            assert csp == "default-src 'none'; frame-ancestors 'none'", response.url
        assert [response.status_code for response in answers] == [401, 404, 201, 200, 400]
